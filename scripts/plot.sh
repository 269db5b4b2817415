#!/usr/bin/env bash
# PNG charts of training runs and benchmarks, drawn with gnuplot.
#
#   scripts/plot.sh loss LOGDIR OUT.png [TAG]
#       A scalar (default train/loss) against seconds since each run's first
#       event, from TensorBoard event files: a --logdir of examples/mnist_mlp
#       (or any TensorFlow event files). One line per run: each directory
#       holding event files, e.g. LOGDIR/rank<N> with --logdir-per-rank. The
#       files are read by scripts/tb_scalars.py (python3, no other package).
#   scripts/plot.sh throughput CSV OUT.png
#       Samples/s against ranks, one line per framework, from a CSV with the
#       columns framework,ranks,samples_per_sec (a header line is allowed;
#       blanks in a framework's name show as '_').
#
# Needs gnuplot (Debian: gnuplot-nox); installed with apt-get when missing
# and running as root, else the script says what to install.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 3 ] || usage
kind=$1 input=$2 out=$3 tag=${4:-train/loss}

if ! command -v gnuplot >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "plot.sh: installing gnuplot-nox" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null; }
  else
    echo "plot.sh: gnuplot not found; install it (Debian: apt-get install gnuplot-nox)" >&2
    exit 1
  fi
fi
term="pngcairo noenhanced size 800,480 font ',10'"
gnuplot -e "set terminal" 2>&1 | grep -q pngcairo || term="png noenhanced size 800,480"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case $kind in
loss)
  [ -d "$input" ] || { echo "plot.sh: '$input' is not a directory" >&2; exit 1; }
  python3 "$here/tb_scalars.py" "$input" --tag "$tag" >"$tmp/scalars.csv"
  # one gnuplot data block per run: seconds since the run's first event, value
  awk -F, -v runs="$tmp/runs" 'NR > 1 {
      if ($1 != run) { if (run != "") printf "\n\n"; run = $1; t0 = $4; print run >> runs }
      printf "%.6f %s %s\n", $4 - t0, $5, $3
    }' "$tmp/scalars.csv" >"$tmp/data"
  [ -s "$tmp/data" ] || { echo "plot.sh: no '$tag' scalars in event files under '$input'" >&2; exit 1; }
  nruns=$(wc -l <"$tmp/runs")
  titles=$(tr '\n' ' ' <"$tmp/runs")
  gnuplot <<EOF
set terminal $term
set output '$out'
set title '$tag against time ($input)'
set xlabel 'seconds since the first event'
set ylabel '$tag'
set grid
set key top right
titles = '$titles'
plot for [i=1:$nruns] '$tmp/data' index i-1 using 1:2 with lines lw 2 \
     title ($nruns > 1 ? word(titles, i) : '$tag')
EOF
  ;;
throughput)
  [ -f "$input" ] || { echo "plot.sh: no such file '$input'" >&2; exit 1; }
  # one data block per framework (first-seen order), sorted by ranks
  awk -F, 'NR == 1 && $2 !~ /^[0-9]+$/ { next }
           NF >= 3 && $2 ~ /^[0-9]+$/ { gsub(/^ +| +$/, "", $1); gsub(/ /, "_", $1); print $1 "," $2 "," $3 }' "$input" |
    sort -t, -s -k1,1 -k2,2n >"$tmp/sorted"
  [ -s "$tmp/sorted" ] || { echo "plot.sh: no rows framework,ranks,samples_per_sec in '$input'" >&2; exit 1; }
  awk -F, -v names="$tmp/names" '{
      if ($1 != fw) { if (fw != "") printf "\n\n"; fw = $1; print fw >> names }
      print $2, $3
    }' "$tmp/sorted" >"$tmp/data"
  n=$(wc -l <"$tmp/names")
  maxr=$(cut -d, -f2 "$tmp/sorted" | sort -n | tail -1)
  gnuplot <<EOF
set terminal $term
set output '$out'
set title 'training throughput against ranks'
set xlabel 'ranks'
set ylabel 'samples/s'
set xrange [0.5:$maxr + 0.5]
set xtics 1
set yrange [0:*]
set grid
set key top left
names = "$(tr '\n' ' ' <"$tmp/names")"
plot for [i=1:$n] '$tmp/data' index i-1 using 1:2 with linespoints lw 2 pt 7 title word(names, i)
EOF
  ;;
*) usage ;;
esac
echo "plot.sh: wrote $out"
