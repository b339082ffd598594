#!/bin/sh
# The builder container's command (`cd /src && ./build.sh`): produce target/universal/<name>-<version>.zip
# whose top folder is <name>-<version>/ with bin/start.sh, like sbt-native-packager's universal zip.
# With sbt on PATH it runs sbt; in the stand-in builder (busybox) it stages src/universal and zips it.
set -eu
cd "$(dirname "$0")"
name=$(sed -n 's/^[[:space:]]*name[[:space:]]*:=[[:space:]]*"\([^"]*\)".*/\1/p' build.sbt)
version=$(sed -n 's/^[[:space:]]*\(ThisBuild[[:space:]]*\/[[:space:]]*\)\{0,1\}version[[:space:]]*:=[[:space:]]*"\([^"]*\)".*/\2/p' build.sbt)
echo "building $name $version"
if [ -d /root/.ivy2 ] && [ -w /root/.ivy2 ]; then
    echo "$name $version" >> /root/.ivy2/devops-flows-builds.log
    echo "ivy cache: $(wc -l < /root/.ivy2/devops-flows-builds.log) build(s) recorded"
fi
if command -v sbt >/dev/null 2>&1; then
    exec sbt -batch clean universal:packageBin
fi
stage=target/universal/stage
rm -rf "$stage"
mkdir -p "$stage/$name-$version"
cp -R src/universal/. "$stage/$name-$version/"
sed -i "s/@VERSION@/$version/g" "$stage/$name-$version/share/www/index.html"
echo "$version" > "$stage/$name-$version/VERSION"
chmod 0755 "$stage/$name-$version/bin/"*
cd "$stage"
mkzip "../$name-$version.zip" "$name-$version"
