#!/bin/sh
# mkzip ZIPFILE DIR: write a zip of DIR's regular files (stored, no compression) with busybox only.
# Busybox has `unzip` but no `zip`; this writes the format directly (local headers, central directory,
# end record) with `crc32`, `stat` and `printf`. Entry names are DIR/..., relative to the current
# directory; unix permission bits are kept (bin/start.sh stays executable). Files up to 4 GiB, no zip64.
set -eu
[ $# -eq 2 ] || { echo "usage: mkzip ZIPFILE DIR" >&2; exit 2; }
out=$1; dir=${2%/}
case "$dir" in /*|*..*) echo "mkzip: DIR must be a relative path without '..'" >&2; exit 2;; esac
[ -d "$dir" ] || { echo "mkzip: $dir is not a directory" >&2; exit 2; }

le16() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))"; }
le32() { le16 $(($1 & 65535)); le16 $(($1 >> 16 & 65535)); }

central=$(mktemp); list=$(mktemp)
trap 'rm -f "$central" "$list"' EXIT
: > "$out"
find "$dir" -type f | sort > "$list"
count=0
while IFS= read -r file; do
    size=$(stat -c %s "$file")
    crc=$((0x$(crc32 "$file" | cut -d' ' -f1)))
    mode=$((0x$(stat -c %f "$file")))
    nlen=${#file}
    offset=$(stat -c %s "$out")
    { le32 $((0x04034b50)); le16 20; le16 0; le16 0; le16 0; le16 33
      le32 $crc; le32 $size; le32 $size; le16 $nlen; le16 0; printf %s "$file"; cat "$file"; } >> "$out"
    { le32 $((0x02014b50)); le16 $((3 << 8 | 20)); le16 20; le16 0; le16 0; le16 0; le16 33
      le32 $crc; le32 $size; le32 $size; le16 $nlen; le16 0; le16 0; le16 0; le16 0
      le32 $((mode << 16)); le32 $offset; printf %s "$file"; } >> "$central"
    count=$((count + 1))
done < "$list"
cd_offset=$(stat -c %s "$out"); cd_size=$(stat -c %s "$central")
cat "$central" >> "$out"
{ le32 $((0x06054b50)); le16 0; le16 0; le16 $count; le16 $count; le32 $cd_size; le32 $cd_offset; le16 0; } >> "$out"
echo "mkzip: $out ($count files)"
