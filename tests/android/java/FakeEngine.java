import dev.edgestill.demo.core.Bench;
import dev.edgestill.demo.core.Engine;

/**
 * A deterministic stand-in for onnxruntime-genai in the tests of the app's pure-Java core: one
 * token per word, and a fake clock that the "model" advances (prefill: 0.5 ms per prompt token +
 * 1 ms; each decode step: 4 ms), so the timings in the record are known exactly.
 */
public final class FakeEngine implements Engine {
    /** The clock the fake model advances; nothing else moves it. */
    public static final class FakeClock implements Bench.Clock {
        long now = 1_000_000_000L;

        @Override
        public long nanos() {
            return now;
        }

        void advanceMs(double ms) {
            now += Math.round(ms * 1e6);
        }
    }

    private final FakeClock clock;
    private final int stopAfter;
    private final boolean threads;

    FakeEngine(FakeClock clock, int stopAfter, boolean threads) {
        this.clock = clock;
        this.stopAfter = stopAfter;
        this.threads = threads;
    }

    @Override
    public boolean threadsApplied() {
        return threads;
    }

    @Override
    public int[] encode(String text) {
        String[] words = text.trim().split("\\s+");
        int[] ids = new int[words.length];
        for (int i = 0; i < words.length; i++) ids[i] = Math.floorMod(words[i].hashCode(), 49152);
        return ids;
    }

    @Override
    public Run start(int[] promptIds, int newTokens) {
        return new Run() {
            int produced = 0;

            @Override
            public int next() {
                if (produced >= stopAfter) return -1;
                clock.advanceMs(produced == 0 ? 0.5 * promptIds.length + 1.0 : 4.0);
                return produced++;
            }

            @Override
            public void close() {}
        };
    }

    @Override
    public void close() {}
}
