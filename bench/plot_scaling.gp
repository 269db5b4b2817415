# Global training samples/s against ranks, dgrad vs PyTorch DDP; called by bench/bench_ddp.py:
#   gnuplot -e "datafile='x.dat'; outfile='x.png'; plottitle='...'; label1='...'; label2='...'; maxranks=2" \
#           bench/plot_scaling.gp
# datafile columns: ranks, then median min max for label1, then median min max for label2.
if (!exists("datafile")) datafile = 'ddp_scaling.dat'
if (!exists("outfile")) outfile = 'ddp_scaling.png'
if (!exists("plottitle")) plottitle = 'MNIST MLP data-parallel scaling'
if (!exists("label1")) label1 = 'dgrad'
if (!exists("label2")) label2 = 'PyTorch DDP'
if (!exists("maxranks")) maxranks = 2

set terminal pngcairo noenhanced size 720,450 font ',10'
set output outfile
set title plottitle
set xlabel 'ranks (processes)'
set ylabel 'global training samples/s (median, min-max bars)'
set xrange [0.5:maxranks + 0.5]
set xtics 1
set yrange [0:*]
set grid ytics
set key top center horizontal
set offsets 0, 0, graph 0.15, 0
set style line 1 lc rgb '#1f77b4' lw 2 pt 7 ps 1.2
set style line 2 lc rgb '#d62728' lw 2 pt 5 ps 1.2
plot datafile using 1:2:3:4 with yerrorbars ls 1 notitle, \
     ''       using 1:2 with linespoints ls 1 title label1, \
     ''       using 1:5:6:7 with yerrorbars ls 2 notitle, \
     ''       using 1:5 with linespoints ls 2 title label2
