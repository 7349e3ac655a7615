#!/bin/sh
# check_layers.sh SRC_ROOT - enforces the layer rule of docs/STYLE: a layer may include
# only layers to its left: core -> kernels -> io -> tokenizer -> models -> {data, train,
# eval} -> serve -> cli (train may also use data; eval may use data). Exit 1 on a violation.
root=${1:-.}
rank() {
  case $1 in
    core) echo 0;; kernels) echo 1;; io) echo 2;; tokenizer) echo 3;; models) echo 4;;
    data) echo 5;; train) echo 6;; eval) echo 6;; serve) echo 7;; cli) echo 8;; *) echo -1;;
  esac
}
bad=0
for dir in "$root"/src/*/; do
  layer=$(basename "$dir")
  lr=$(rank "$layer")
  [ "$lr" -ge 0 ] || continue
  for f in $(find "$dir" -name '*.[ch]'); do
    for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([a-z_]*\)\/.*/\1/p' "$f"); do
      ir=$(rank "$inc")
      [ "$ir" -ge 0 ] || continue
      if [ "$layer" = train ] && [ "$inc" = data ]; then continue; fi
      if [ "$layer" = eval ] && [ "$inc" = data ]; then continue; fi
      if [ "$layer" = cli ]; then
        echo "$f: the CLI uses the public API only, but includes \"$inc/...\""; bad=1; continue
      fi
      if [ "$ir" -gt "$lr" ] || { [ "$ir" -eq "$lr" ] && [ "$inc" != "$layer" ]; }; then
        echo "$f: layer '$layer' must not include layer '$inc'"; bad=1
      fi
    done
  done
done
[ $bad -eq 0 ] && echo "layer rules: ok"
exit $bad
