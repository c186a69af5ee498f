#!/usr/bin/env bash
# Several bench/run.sh reports pooled into one table: the per-round ratios of
# every run together, their medians, and for each of the performance issue's
# goals in how many runs it was met. One run's median moves with the state of
# this shared machine during its few minutes; the pool says where the ratio
# sits and how often one run lands on either side of a goal.
#
# Usage: bash bench/pool.sh REPORT...
#   e.g. bash bench/pool.sh bench/runs/*-local.md
# Each REPORT is a markdown report written by `bash bench/run.sh --out FILE`
# (it ends with a block of per-round results). Only runs of the same mode
# (local or latency, pinned or not, clients, requests) are pooled.
# See bench/README.md.
set -euo pipefail

die() {
  echo "pool.sh: error: $*" >&2
  exit 1
}
case "${1:-}" in
  -h | --help | "")
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    [ $# -gt 0 ] || exit 1
    exit 0
    ;;
esac
command -v python3 >/dev/null || die "python3 is needed"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/roomproxy-pool.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
POOLED=$TMP/results.tsv
: >"$POOLED"
key="" latency="" n=0
for report in "$@"; do
  [ -f "$report" ] || die "$report: no such file"
  # The fenced block run.sh appends: ```tsv rounds: KEY ... ```
  this=$(sed -n 's/^```tsv rounds: //p' "$report")
  [ -n "$this" ] || die "$report: no per-round results (written by bench/run.sh --out since they were added)"
  [ "$(wc -l <<<"$this")" -eq 1 ] || die "$report: more than one block of per-round results"
  if [ -z "$key" ]; then
    key=$this
  elif [ "$this" != "$key" ]; then
    die "$report is a run of \"$this\", the first one of \"$key\": only runs of one mode are pooled"
  fi
  if [[ "$this" =~ ^latency\ ([0-9]+)\ ms ]]; then latency=${BASH_REMATCH[1]}; fi
  n=$((n + 1))
  # Round R of the Nth report becomes round N.R.
  sed -n '/^```tsv rounds: /,/^```$/p' "$report" | sed '1d;$d' |
    awk -F'\t' -v OFS='\t' -v run="$n" 'NF >= 9 {$1 = run "." $1; print}' >>"$POOLED"
done
[ -s "$POOLED" ] || die "no per-round results in $*"

rounds=$(cut -f1 "$POOLED" | sort -u | wc -l)
echo "## Pooled: $n run(s), $rounds rounds ($key)"
echo
i=0
for report in "$@"; do
  i=$((i + 1))
  echo "- run $i: $report ($(sed -n 's/^Machine: //p' "$report" | head -n 1 | sed "s/\.$//"))"
done
echo
python3 "$HERE/report.py" "$POOLED" "$latency"
