package dev.edgestill.demo.core;

import java.util.ArrayList;
import java.util.List;

/**
 * The timing loop, the same as the harness's (benchmarks/measure.py): `warmup` untimed runs,
 * then `repetitions` timed runs of exactly gen_tokens greedy tokens after exactly prompt_tokens
 * prompt ids.
 *
 * <ul>
 *   <li>TTFT: from starting a run to its first token (prefill of the prompt + the first pick).
 *   <li>decode step: the gap between consecutive tokens after the first (one token through the
 *       model with the KV cache + the greedy pick).
 *   <li>decode tok/s of a run: decode steps / decode seconds; the record gives the median over runs.
 * </ul>
 * Tokenization is outside every timing.
 */
public final class Bench {
    /** A monotonic clock in nanoseconds (System::nanoTime in the app). */
    public interface Clock {
        long nanos();
    }

    /** What the timed runs measured: ms per TTFT, ms per decode step, tok/s per run. */
    public static final class Timings {
        public final List<Double> ttftMs = new ArrayList<>();
        public final List<Double> stepMs = new ArrayList<>();
        public final List<Double> tokPerS = new ArrayList<>();
    }

    private Bench() {}

    /** Runs the warm-up and timed runs of `settings` on `engine`. */
    public static Timings run(Engine engine, int[] promptIds, BenchSettings settings, Clock clock) throws Exception {
        for (int i = 0; i < settings.warmup; i++) {
            timeOneRun(engine, promptIds, settings.genTokens, clock);
        }
        Timings t = new Timings();
        for (int i = 0; i < settings.repetitions; i++) {
            long[] stamps = timeOneRun(engine, promptIds, settings.genTokens, clock);
            t.ttftMs.add((stamps[1] - stamps[0]) / 1e6);
            double decodeS = 0;
            for (int k = 2; k < stamps.length; k++) {
                double step = (stamps[k] - stamps[k - 1]) / 1e9;
                t.stepMs.add(step * 1000);
                decodeS += step;
            }
            if (stamps.length > 2) t.tokPerS.add((stamps.length - 2) / decodeS);
        }
        return t;
    }

    /** One generation: [start, time of token 1, ..., time of token n] in clock nanoseconds. */
    static long[] timeOneRun(Engine engine, int[] promptIds, int genTokens, Clock clock) throws Exception {
        long[] stamps = new long[genTokens + 1];
        stamps[0] = clock.nanos();
        try (Engine.Run run = engine.start(promptIds, genTokens)) {
            for (int i = 1; i <= genTokens; i++) {
                if (run.next() < 0) {
                    throw new IllegalStateException("the engine stopped after " + (i - 1) + " tokens, expected "
                            + genTokens + " (end-of-sequence must be ignored while benchmarking)");
                }
                stamps[i] = clock.nanos();
            }
        }
        return stamps;
    }
}
