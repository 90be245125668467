package dev.edgestill.demo.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * The benchmark settings of one measurement, read from the launch intent's extras, with the
 * harness's defaults (edgestill/recipe.py `Bench`: threads 2, prompt 64, gen 32, 5 repetitions,
 * 1 warm-up) and the harness's prompt (benchmarks/measure.py PASSAGE, repeated and cut to exactly
 * prompt_tokens ids; no chat template).
 *
 * <p>Extras (all optional, given as strings or ints): threads (a list "1,2,4" runs one
 * measurement per value), prompt_tokens, gen_tokens, repetitions, warmup, target ("adb://SERIAL",
 * default "adb://"), run_id.
 */
public final class BenchSettings {
    /** The harness's benchmark text: keep equal to benchmarks/measure.py PASSAGE (a test checks). */
    public static final String PASSAGE =
            "The small harbour town wakes up early. Before sunrise the fishing boats leave the quay, "
            + "and by eight o'clock the bakery on the main square has already sold most of its bread. "
            + "In summer the population triples: visitors rent bicycles, walk along the cliffs and eat "
            + "grilled sardines in the restaurants near the lighthouse. The town council has spent the "
            + "last two years arguing about a new car park. Shop owners want more parking spaces close "
            + "to the centre, while residents worry about traffic on the narrow streets and would rather "
            + "see a shuttle bus from a field outside town. A public meeting last week drew more than "
            + "three hundred people, and the mayor promised a decision before the end of the autumn. "
            + "Meanwhile the old cannery, closed since the nineteen-eighties, is being turned into a "
            + "museum about the fishing industry, with photographs, nets and a restored wooden boat. ";

    public final int threads;
    public final int promptTokens;
    public final int genTokens;
    public final int repetitions;
    public final int warmup;
    public final String target;
    public final String runId;

    public BenchSettings(int threads, int promptTokens, int genTokens, int repetitions, int warmup,
                         String target, String runId) {
        this.threads = threads;
        this.promptTokens = promptTokens;
        this.genTokens = genTokens;
        this.repetitions = repetitions;
        this.warmup = warmup;
        this.target = target;
        this.runId = runId;
    }

    /** Bad extras; the message names the extra and the allowed values. */
    public static final class SettingsException extends Exception {
        private static final long serialVersionUID = 1L;

        public SettingsException(String message) {
            super(message);
        }
    }

    /** One BenchSettings per requested thread count, from string extras (absent = default). */
    public static List<BenchSettings> parse(Map<String, String> extras) throws SettingsException {
        int prompt = intExtra(extras, "prompt_tokens", 64, 1);
        int gen = intExtra(extras, "gen_tokens", 32, 1);
        int reps = intExtra(extras, "repetitions", 5, 1);
        int warmup = intExtra(extras, "warmup", 1, 0);
        String target = extras.getOrDefault("target", "adb://");
        if (target == null || !target.startsWith("adb://")) {
            throw new SettingsException("extra target: must start with adb:// (e.g. adb://R5CT1234567), got "
                    + target);
        }
        String runId = extras.get("run_id");
        List<BenchSettings> out = new ArrayList<>();
        String threads = extras.getOrDefault("threads", "2");
        for (String t : Arrays.asList(threads.split(","))) {
            int n = parseInt("threads", t.trim(), 1);
            out.add(new BenchSettings(n, prompt, gen, reps, warmup, target, runId));
        }
        return out;
    }

    private static int intExtra(Map<String, String> extras, String key, int fallback, int min)
            throws SettingsException {
        String v = extras.get(key);
        return v == null ? fallback : parseInt(key, v.trim(), min);
    }

    private static int parseInt(String key, String v, int min) throws SettingsException {
        try {
            int n = Integer.parseInt(v);
            if (n >= min) return n;
        } catch (NumberFormatException ignored) {
            // fall through to the message
        }
        throw new SettingsException("extra " + key + ": must be a whole number >= " + min + ", got '" + v
                + "' (e.g. --ei " + key + " 4" + ("threads".equals(key) ? " or --es threads 1,2,4" : "") + ")");
    }

    /**
     * Exactly `n` ids of real text: `piece` (the tokenized PASSAGE) repeated as often as needed,
     * like the harness's prompt_ids.
     */
    public static int[] promptIds(int[] piece, int n) {
        if (piece.length == 0) {
            throw new IllegalArgumentException("the bundle's tokenizer encodes the benchmark passage to nothing");
        }
        int[] out = new int[n];
        for (int i = 0; i < n; i++) out[i] = piece[i % piece.length];
        return out;
    }
}
