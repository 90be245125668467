package dev.edgestill.demo.core;

/**
 * What the benchmark loop needs from a loaded model, so the loop (and its timing rules) stay in
 * pure Java: the app implements it with onnxruntime-genai (GenaiEngine.kt), the tests with a
 * deterministic fake (tests/android/java/FakeEngine.java).
 */
public interface Engine extends AutoCloseable {
    /** true when the engine runs with the intra-op thread count it was loaded with. */
    boolean threadsApplied();

    /** Frees the model. */
    @Override
    void close();

    /** Token ids of `text` as the model's tokenizer encodes it. */
    int[] encode(String text) throws Exception;

    /**
     * Starts one greedy generation of `newTokens` tokens after `promptIds`, never stopping at an
     * end-of-sequence token (the harness's ignore_eos=True). Must not run the model yet if the
     * engine can defer it: the clock is started before this call.
     */
    Run start(int[] promptIds, int newTokens) throws Exception;

    /** One generation in progress. */
    interface Run extends AutoCloseable {
        /** The next token id (the first call includes the prefill); -1 when the engine stopped. */
        int next() throws Exception;

        @Override
        void close();
    }
}
