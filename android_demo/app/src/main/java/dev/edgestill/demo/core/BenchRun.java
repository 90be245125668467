package dev.edgestill.demo.core;

import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * One benchmark-mode launch, start to records: parse the settings, then for each setting open
 * and check the bundle, check memory, load it (timed), check the context window, measure
 * (Bench), and build the record. Any failure becomes a record with status "error" and a
 * one-line reason; nothing is thrown. The app (BenchMode.kt) supplies the onnxruntime-genai
 * loader and the phone's facts; the tests supply a fake engine and a fake device.
 */
public final class BenchRun {
    /** Loads a bundle folder with `threads` intra-op threads. */
    public interface Loader {
        Engine load(File dir, int threads) throws Exception;
    }

    /** What the record needs from the device. */
    public interface Device {
        long availableBytes();

        Double peakRssMb();

        Map<String, Object> machine();
    }

    private final Loader loader;
    private final Device device;
    private final Bench.Clock clock;
    private final String engineVersion;
    private final String startedAt;
    private int modelsLoaded = 0;

    public BenchRun(Loader loader, Device device, Bench.Clock clock, String engineVersion, String startedAt) {
        this.loader = loader;
        this.device = device;
        this.clock = clock;
        this.engineVersion = engineVersion;
        this.startedAt = startedAt;
    }

    /** Every record of one launch: `bundleArg` as given (for the record), `dir` as resolved. */
    public List<Map<String, Object>> run(Map<String, String> extras, String bundleArg, File dir) {
        List<Map<String, Object>> records = new ArrayList<>();
        List<BenchSettings> grid;
        try {
            grid = BenchSettings.parse(extras);
        } catch (BenchSettings.SettingsException e) {
            BenchSettings fallback = new BenchSettings(2, 64, 32, 5, 1, "adb://", extras.get("run_id"));
            records.add(Record.error(e.getMessage(), null, bundleArg, fallback, device.machine(), engineVersion,
                    startedAt));
            return records;
        }
        for (BenchSettings s : grid) records.add(measure(bundleArg, dir, s));
        return records;
    }

    private Map<String, Object> measure(String bundleArg, File dir, BenchSettings s) {
        Bundle bundle = null;
        Engine engine = null;
        try {
            long start = clock.nanos();
            bundle = Bundle.open(dir, true); // like the harness: load_s includes the sha256 check
            String lowMemory = Memory.notEnough(Memory.needBytes(bundle, s.promptTokens + s.genTokens),
                    device.availableBytes());
            if (lowMemory != null) throw new Bundle.BundleException(lowMemory);
            checkContext(bundle, s);
            engine = loader.load(dir, s.threads);
            double loadS = (clock.nanos() - start) / 1e9;
            List<String> noise = notes(engine, s);
            modelsLoaded++;
            int[] ids = BenchSettings.promptIds(engine.encode(BenchSettings.PASSAGE), s.promptTokens);
            Bench.Timings timings = Bench.run(engine, ids, s, clock);
            return Record.ok(bundle, bundleArg, s, loadS, timings, device.peakRssMb(), device.machine(),
                    engineVersion, startedAt, noise);
        } catch (OutOfMemoryError e) {
            return error("not enough memory to load or run the bundle (" + e.getMessage() + "); close other apps "
                    + "or use a smaller bundle (int8 or int4)", bundle, bundleArg, s);
        } catch (Bundle.BundleException e) {
            return error(e.getMessage(), bundle != null ? bundle : e.partial, bundleArg, s);
        } catch (Exception e) {
            return error(engineVersion + " could not run bundle " + bundleArg + " (" + e.getClass().getSimpleName()
                    + ": " + e.getMessage() + "); check the bundle was exported by the edgestill version this app "
                    + "was built with", bundle, bundleArg, s);
        } finally {
            if (engine != null) engine.close();
        }
    }

    private Map<String, Object> error(String message, Bundle bundle, String bundleArg, BenchSettings s) {
        return Record.error(message, bundle, bundleArg, s, device.machine(), engineVersion, startedAt);
    }

    /** Why this measurement may not compare with a fresh-process one at these settings. */
    private List<String> notes(Engine engine, BenchSettings s) {
        List<String> notes = new ArrayList<>();
        if (!engine.threadsApplied()) {
            notes.add("threads=" + s.threads + " not applied: this onnxruntime-genai has no Config.overlay; the "
                    + "bundle's genai_config.json session_options decide");
        }
        if (modelsLoaded > 0) {
            notes.add("peak_rss_mb includes the " + modelsLoaded + " measurement(s) run before in the same process");
        }
        return notes;
    }

    static void checkContext(Bundle bundle, BenchSettings s) throws Bundle.BundleException {
        long limit = bundle.modelLong("context_length", 0);
        if (limit > 0 && s.promptTokens + s.genTokens > limit) {
            throw new Bundle.BundleException("prompt_tokens + gen_tokens = " + (s.promptTokens + s.genTokens)
                    + " exceeds the model's context_length " + limit + "; lower --ei prompt_tokens or gen_tokens");
        }
    }
}
