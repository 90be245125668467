package dev.edgestill.demo.core;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Builds the benchmark record the app writes, in the project's one schema
 * (benchmarks/record.schema.json, "edgestill-bench-record" version 1), with the harness's
 * rounding (ms to 0.01, decode ms to 0.001, tok/s to 0.1, load_s to 0.0001).
 *
 * <p>tests/android/test_record.py runs this code (with a fake engine) and validates what it
 * writes against the schema.
 */
public final class Record {
    public static final String SCHEMA = "edgestill-bench-record";
    public static final int SCHEMA_VERSION = 1;
    public static final String ENGINE = "android-demo";
    public static final String TIMING_SCOPE = "onnxruntime-genai Generator: prefill of prompt_tokens ids + first "
            + "greedy pick (TTFT); one decode step per later token; end-of-sequence ignored; no tokenization, "
            + "no chat template";
    /** A run whose decode tok/s spread (max - min) exceeds this fraction of the median is noisy. */
    static final double NOISY_SPREAD = 0.25;

    private Record() {}

    /** The fields every record has, ok or error. */
    static Map<String, Object> head(String status, String error, String name, String bundlePath,
                                    BenchSettings s, String engineVersion, String startedAt) {
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("schema", SCHEMA);
        r.put("schema_version", SCHEMA_VERSION);
        r.put("status", status);
        r.put("error", error);
        r.put("name", name == null || name.isEmpty() ? "unknown" : name);
        r.put("bundle", bundlePath);
        r.put("engine", ENGINE);
        r.put("engine_version", engineVersion);
        r.put("target", s.target);
        r.put("threads", s.threads);
        r.put("pinned_cpus", null);
        r.put("prompt_tokens", s.promptTokens);
        r.put("gen_tokens", s.genTokens);
        r.put("warmup", s.warmup);
        r.put("repetitions", s.repetitions);
        r.put("started_at", startedAt);
        r.put("run_id", s.runId);
        return r;
    }

    /** What the record says about the bundle itself (from its manifest). */
    static void putBundle(Map<String, Object> r, Bundle b) {
        r.put("bundle_sha256", b.manifestSha256);
        Object role = b.manifest.get("role");
        r.put("role", "teacher".equals(role) || "student".equals(role) ? role : null);
        Object precision = b.manifest.get("precision");
        r.put("precision", precision instanceof String ? precision : null);
        Object quant = b.manifest.get("quantization");
        r.put("quantization", quant instanceof Map ? quant : null);
        Object params = b.manifest.get("params");
        r.put("params", params instanceof Long ? params : null);
        r.put("file_bytes", b.fileBytes());
        r.put("quality", b.quality());
    }

    /** A record of a finished measurement. */
    public static Map<String, Object> ok(Bundle b, String bundlePath, BenchSettings s, double loadS,
                                         Bench.Timings t, Double peakRssMb, Map<String, Object> machine,
                                         String engineVersion, String startedAt, List<String> noise) {
        Map<String, Object> r = head("ok", null, b.name(), bundlePath, s, engineVersion, startedAt);
        putBundle(r, b);
        r.put("load_s", Stats.round(loadS, 4));
        double ttft50 = Stats.percentile(t.ttftMs, 50);
        r.put("ttft_ms_p50", Stats.round(ttft50, 2));
        r.put("ttft_ms_p90", Stats.round(Stats.percentile(t.ttftMs, 90), 2));
        boolean decoded = !t.stepMs.isEmpty();
        r.put("decode_ms_p50", decoded ? Stats.round(Stats.percentile(t.stepMs, 50), 3) : null);
        r.put("decode_ms_p90", decoded ? Stats.round(Stats.percentile(t.stepMs, 90), 3) : null);
        r.put("decode_tok_s_p50", decoded ? Stats.round(Stats.percentile(t.tokPerS, 50), 1) : null);
        r.put("decode_tok_s_min", decoded ? Stats.round(Stats.min(t.tokPerS), 1) : null);
        r.put("decode_tok_s_max", decoded ? Stats.round(Stats.max(t.tokPerS), 1) : null);
        r.put("prefill_tok_s_p50", ttft50 > 0 ? Stats.round(s.promptTokens / (ttft50 / 1000.0), 1) : null);
        r.put("peak_rss_mb", peakRssMb == null ? null : Stats.round(peakRssMb, 1));
        r.put("timing_scope", TIMING_SCOPE);
        List<String> allNoise = new ArrayList<>(noise);
        if (decoded) {
            double median = Stats.percentile(t.tokPerS, 50);
            double spread = (Stats.max(t.tokPerS) - Stats.min(t.tokPerS)) / median;
            if (spread > NOISY_SPREAD) {
                allNoise.add("decode tok/s min-max spread " + Math.round(spread * 100) + "% of median");
            }
        }
        r.put("noisy", !allNoise.isEmpty());
        r.put("noise", allNoise);
        r.put("machine", machine);
        return r;
    }

    /**
     * A record of a measurement that could not run: status "error" and the one-line reason.
     * `bundle` may be null (no readable manifest); the name is then the folder's name.
     */
    public static Map<String, Object> error(String message, Bundle b, String bundlePath, BenchSettings s,
                                            Map<String, Object> machine, String engineVersion,
                                            String startedAt) {
        String name = b != null ? b.name() : folderName(bundlePath);
        Map<String, Object> r = head("error", oneLine(message), name, bundlePath, s, engineVersion, startedAt);
        if (b != null) putBundle(r, b);
        r.put("load_s", null);
        r.put("ttft_ms_p50", null);
        r.put("peak_rss_mb", null);
        r.put("machine", machine);
        return r;
    }

    /** `message` on one line (newlines and tabs become spaces), never empty. */
    static String oneLine(String message) {
        String m = message == null ? "" : message.replaceAll("[\\r\\n\\t]+", " ").trim();
        return m.isEmpty() ? "unknown error" : m;
    }

    static String folderName(String path) {
        if (path == null) return "unknown";
        String p = path.replaceAll("/+$", "");
        String name = p.substring(p.lastIndexOf('/') + 1);
        return name.isEmpty() ? "unknown" : name;
    }

    /** The bench_out file's content: a JSON list of records, indented by 1 like the harness's files. */
    public static String toJson(List<Map<String, Object>> records) {
        return Json.write(records, 1) + "\n";
    }
}
