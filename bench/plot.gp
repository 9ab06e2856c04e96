# Latency CDF of the keep-alive scenario: bench/run.sh calls
#   gnuplot -e "sluice='FILE'; peer='FILE'; out='bench/latency.png'" bench/plot.gp
# where each FILE holds "latency_us fraction" lines in increasing order.
set terminal pngcairo size 900,540 noenhanced font ",11"
set output out
set title "keep-alive GET, 8 threads, nginx on loopback: latency CDF"
set xlabel "latency (microseconds, log scale)"
set ylabel "fraction of requests at or below"
set logscale x 10
set yrange [0:1.0]
set grid xtics ytics mxtics
set key bottom right
plot sluice using 1:2 with lines linewidth 2 title "sluice (one shared pool)", \
     peer using 1:2 with lines linewidth 2 title "libcurl (a handle per thread)"
