# logits_check.sh - shell helpers shared by the CLI tests that compare logits files (sourced by
# cli_quantize.sh, cli_portable.sh and cli_cross_aarch64.sh; not a test itself). The caller
# sets fail=0 first and exits with $fail.

# missing_prereq WHAT: a prerequisite is not installed. Under CI=true that is a failure (exit
# 1); elsewhere the test reports itself skipped (exit 77, CTest's SKIP_RETURN_CODE), never passed.
missing_prereq() {
  if [ "${CI:-}" = true ]; then echo "FAIL missing: $1"; exit 1; fi
  echo "skip: missing: $1"; exit 77
}

# check WHAT COMMAND...: runs COMMAND, prints "ok   WHAT" or "FAIL WHAT" (and sets fail=1)
check() { local what=$1; shift; if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi; }

# reldiff A B: max |a - b| / max |b| over two raw little-endian float32 files, via od (no Python
# in CI); "nan" when they are empty or B is all zero
reldiff() {
  paste <(od -An -v -f -w4 "$1") <(od -An -v -f -w4 "$2") |
    awk 'BEGIN{m=0;s=0} {d=$1-$2; if (d<0) d=-d; if (d>m) m=d; b=$2<0?-$2:$2; if (b>s) s=b; n++}
         END{if (n==0 || s==0) print "nan"; else printf "%.3g\n", m/s}'
}

# le A B: A <= B as numbers, false when A is "nan"
le() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a+0 <= b+0 && a != "nan")}'; }
