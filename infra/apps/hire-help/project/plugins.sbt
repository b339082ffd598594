addSbtPlugin("com.typesafe.sbt" % "sbt-native-packager" % "1.3.25")
