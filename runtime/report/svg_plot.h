// Small SVG line/scatter plots for the diagnose reports (product.md: "SVG plots are
// ours to write"). A plot is data (series of points, axis scales, labels); render_svg
// turns it into one self-contained <svg> element: a frame, ticks with labels on both
// axes (decades on log10 axes), axis titles, a legend, and each series as a polyline
// and/or point markers. A theory line is a series drawn dashed.
//
// Points a log axis cannot show (x or y <= 0) and non-finite points are skipped, and
// counted in the element's data-skipped attribute, never drawn at a wrong place.
// Every drawn point of a series with markers is a <circle class="pt">, so a reader (or
// a test) can count the data points of a plot.
#pragma once
#include <string>
#include <vector>

namespace bet::report {

struct Series {
  std::string name;
  std::vector<double> x, y;
  std::string color;    // CSS colour; empty: the palette's next one
  bool line = true;     // join the points
  bool markers = true;  // a circle per point (class "pt")
  bool dashed = false;  // theory and reference lines
};

struct Plot {
  std::string title;
  std::string x_label, y_label;
  bool log_x = false, log_y = false;
  std::vector<Series> series;
  int width = 560, height = 360;
  std::vector<double> x_ticks;  // explicit x ticks (e.g. whole layer counts); empty: computed
};

// A plot without series yet.
Plot make_plot(std::string title, std::string x_label, std::string y_label, bool log_x, bool log_y);

// Tick positions of an axis covering [lo, hi]: "nice" steps (1, 2, 5 x 10^k) on a linear
// axis, decades (with 2 and 5 between them when the range spans fewer than three, and
// every integer multiple when even that gives fewer than three ticks) on a log axis. Exposed for tests.
std::vector<double> linear_ticks(double lo, double hi, int target = 6);
std::vector<double> log_ticks(double lo, double hi);
// A short label for a tick value: "0.25", "1e-06", "1000".
std::string tick_label(double v);

// The <svg> element of the plot. A plot without any drawable point still renders its
// frame and says "no data" inside it.
std::string render_svg(const Plot& plot);

// Escapes &, <, >, " and ' for HTML/XML text and attribute values.
std::string xml_escape(const std::string& s);

}  // namespace bet::report
