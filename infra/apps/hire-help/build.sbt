// hire-help: the article's sample backend. `sbt universal:packageBin` (sbt-native-packager) writes
// target/universal/hire-help-<version>.zip; build.sh does the same without sbt in the stand-in builder.
name := "hire-help"

version := "1.0.0"

scalaVersion := "2.12.8"

enablePlugins(JavaAppPackaging)
