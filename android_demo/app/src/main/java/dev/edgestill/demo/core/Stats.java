package dev.edgestill.demo.core;

import java.math.BigDecimal;
import java.math.RoundingMode;
import java.util.Arrays;
import java.util.List;

/**
 * Percentiles and rounding exactly as the Python harness computes them
 * (benchmarks/measure.py: linear interpolation like numpy's default; Python's round()).
 *
 * <p>tests/android/test_core.py feeds the same vectors to this class and to the harness and
 * asserts equal results, so a phone record and a local record mean the same thing.
 */
public final class Stats {
    private Stats() {}

    /** The q-th percentile (0-100) with linear interpolation; throws on an empty list. */
    public static double percentile(List<Double> values, double q) {
        if (values.isEmpty()) {
            throw new IllegalArgumentException("percentile of no values");
        }
        double[] xs = new double[values.size()];
        for (int i = 0; i < xs.length; i++) xs[i] = values.get(i);
        Arrays.sort(xs);
        double pos = (xs.length - 1) * q / 100.0;
        int lo = (int) pos;
        int hi = Math.min(lo + 1, xs.length - 1);
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo);
    }

    /** Python's round(x, digits): the exact binary value, rounded half to even. */
    public static double round(double x, int digits) {
        if (Double.isNaN(x) || Double.isInfinite(x)) return x;
        return new BigDecimal(x).setScale(digits, RoundingMode.HALF_EVEN).doubleValue();
    }

    /** The smallest value; throws on an empty list. */
    public static double min(List<Double> values) {
        double m = Double.POSITIVE_INFINITY;
        for (double v : values) m = Math.min(m, v);
        if (values.isEmpty()) throw new IllegalArgumentException("min of no values");
        return m;
    }

    /** The largest value; throws on an empty list. */
    public static double max(List<Double> values) {
        double m = Double.NEGATIVE_INFINITY;
        for (double v : values) m = Math.max(m, v);
        if (values.isEmpty()) throw new IllegalArgumentException("max of no values");
        return m;
    }
}
