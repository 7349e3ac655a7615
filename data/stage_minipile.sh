#!/bin/sh
# stage_minipile.sh STAGE_DIR - turns the Debian packaged texts that are not plain files
# (compressed man pages, the dictd GCIDE dictionary, the KJV Bible's binary database, the
# Jargon File, compiled gettext catalogs) into plain text under STAGE_DIR for
# data/minipile.json. Needs the packages in packages.d/data.txt. Idempotent.
set -eu
S=$1
mkdir -p "$S/bible" "$S/man" "$S/gettext" "$S/gcide" "$S/jargon"

# KJV Bible: one document per book (verse lines "Ge1:1 text" grouped by book abbreviation).
if [ ! -s "$S/bible/.done" ]; then
  bible -f -l100000 Gen1:1-Rev22:21 | awk -v d="$S/bible" '
    NF { match($1, /^[0-9]?[A-Za-z]+/); b = substr($1, 1, RLENGTH);
         if (b != last) { if (out) close(out); n++; out = sprintf("%s/%02d-%s.txt", d, n, b); last = b }
         print > out }'
  echo ok > "$S/bible/.done"
fi

# Man pages (sections 1, 5, 7): the troff sources of the first 2500 in sorted order,
# decompressed; symlinks skipped.
if [ ! -s "$S/man/.done" ]; then
  find /usr/share/man/man1 /usr/share/man/man5 /usr/share/man/man7 -name '*.gz' -type f | sort | head -n 2500 |
  while read -r f; do
    b=$(basename "$f" .gz)
    zcat "$f" > "$S/man/$b.txt" 2>/dev/null || rm -f "$S/man/$b.txt"
  done
  echo ok > "$S/man/.done"
fi

# GCIDE (dictzip is gzip-compatible): the first 12 MB of definitions.
if [ ! -s "$S/gcide/.done" ]; then
  zcat /usr/share/dictd/gcide.dict.dz 2>/dev/null | head -c 12000000 > "$S/gcide/gcide.txt" || true
  echo ok > "$S/gcide/.done"
fi

# The Jargon File (plain-text edition).
if [ ! -s "$S/jargon/.done" ]; then
  zcat /usr/share/doc/jargon-text/jargon.txt.gz > "$S/jargon/jargon.txt"
  echo ok > "$S/jargon/.done"
fi

# gettext catalogs: compiled .mo back to .po text (msgunfmt), first 250 in sorted order.
if [ ! -s "$S/gettext/.done" ]; then
  find /usr/share/locale -name '*.mo' -type f | sort | head -n 250 | while read -r f; do
    n=$(echo "$f" | sed -e 's|/usr/share/locale/||' -e 's|/LC_MESSAGES/|-|' -e 's|/|-|g')
    msgunfmt "$f" > "$S/gettext/${n%.mo}.po.txt" 2>/dev/null || rm -f "$S/gettext/${n%.mo}.po.txt"
  done
  echo ok > "$S/gettext/.done"
fi
echo "staged minipile sources in $S"
