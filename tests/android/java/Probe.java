import dev.edgestill.demo.core.Bench;
import dev.edgestill.demo.core.BenchRun;
import dev.edgestill.demo.core.BenchSettings;
import dev.edgestill.demo.core.Bundle;
import dev.edgestill.demo.core.Json;
import dev.edgestill.demo.core.Memory;
import dev.edgestill.demo.core.Record;
import dev.edgestill.demo.core.Stats;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Test driver for the app's pure-Java core: reads a JSON list of calls on stdin
 * ({"op": ..., args}), runs each through the real core classes and prints a JSON list of
 * results ({"ok": value} or {"error": "Class: message"}), so one JVM start serves many checks.
 * Used by tests/android/ only.
 */
public final class Probe {
    public static void main(String[] args) throws Exception {
        List<Object> calls = (List<Object>) Json.parse(readAll(System.in));
        List<Object> results = new ArrayList<>();
        for (Object call : calls) {
            Map<String, Object> result = new LinkedHashMap<>();
            try {
                result.put("ok", run((Map<String, Object>) call));
            } catch (Exception | Error e) {
                result.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
            }
            results.add(result);
        }
        System.out.println(Json.write(results, 0));
    }

    static String readAll(InputStream in) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buf = new byte[8192];
        for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
        return new String(out.toByteArray(), StandardCharsets.UTF_8);
    }

    static List<Double> doubles(Object list) {
        List<Double> out = new ArrayList<>();
        for (Object o : (List<Object>) list) out.add(((Number) o).doubleValue());
        return out;
    }

    static int[] ints(Object list) {
        List<Object> l = (List<Object>) list;
        int[] out = new int[l.size()];
        for (int i = 0; i < out.length; i++) out[i] = ((Number) l.get(i)).intValue();
        return out;
    }

    static Map<String, String> strings(Object map) {
        Map<String, String> out = new LinkedHashMap<>();
        if (map != null) {
            for (Map.Entry<String, Object> e : ((Map<String, Object>) map).entrySet()) {
                out.put(e.getKey(), String.valueOf(e.getValue()));
            }
        }
        return out;
    }

    static Object run(Map<String, Object> c) throws Exception {
        String op = (String) c.get("op");
        switch (op) {
            case "percentile": return Stats.percentile(doubles(c.get("values")), ((Number) c.get("q")).doubleValue());
            case "round": return Stats.round(((Number) c.get("x")).doubleValue(), ((Number) c.get("digits")).intValue());
            case "parse": return Json.write(Json.parse((String) c.get("text")), 0);
            case "quote": return Json.quote((String) c.get("s"));
            case "passage": return BenchSettings.PASSAGE;
            case "prompt_ids": return BenchSettings.promptIds(ints(c.get("piece")), ((Number) c.get("n")).intValue());
            case "peak_rss": return Memory.peakRssMb((String) c.get("text"));
            case "not_enough": return Memory.notEnough(((Number) c.get("need")).longValue(), ((Number) c.get("avail")).longValue());
            case "settings": return settings(c);
            case "bundle": return bundle(c);
            case "bench": return bench(c);
            default: throw new IllegalArgumentException("unknown op " + op);
        }
    }

    static Object settings(Map<String, Object> c) throws Exception {
        List<Object> out = new ArrayList<>();
        for (BenchSettings s : BenchSettings.parse(strings(c.get("extras")))) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("threads", s.threads);
            m.put("prompt_tokens", s.promptTokens);
            m.put("gen_tokens", s.genTokens);
            m.put("repetitions", s.repetitions);
            m.put("warmup", s.warmup);
            m.put("target", s.target);
            m.put("run_id", s.runId);
            out.add(m);
        }
        return out;
    }

    static Object bundle(Map<String, Object> c) throws Exception {
        Bundle b = Bundle.open(new File((String) c.get("dir")), Boolean.TRUE.equals(c.get("verify")));
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("name", b.name());
        m.put("manifest_sha256", b.manifestSha256);
        m.put("file_bytes", b.fileBytes());
        m.put("quality", b.quality());
        m.put("need_bytes", Memory.needBytes(b, 96));
        if (c.get("prompt") != null) m.put("prompt", b.formatPrompt((String) c.get("prompt")));
        return m;
    }

    /** A whole benchmark-mode launch with the fake engine; returns the bench_out file's text. */
    static Object bench(Map<String, Object> c) {
        FakeEngine.FakeClock clock = new FakeEngine.FakeClock();
        Object stop = c.get("stop_after");
        int stopAfter = stop == null ? Integer.MAX_VALUE : ((Number) stop).intValue();
        Object fail = c.get("fail_load");
        boolean oom = Boolean.TRUE.equals(c.get("oom"));
        boolean threads = !Boolean.FALSE.equals(c.get("threads_applied"));
        BenchRun.Loader loader = (dir, n) -> {
            if (oom) throw new OutOfMemoryError("Failed to allocate 812 MB");
            if (fail != null) throw new IllegalStateException((String) fail);
            clock.advanceMs(250);
            return new FakeEngine(clock, stopAfter, threads);
        };
        Object avail = c.get("available_bytes");
        BenchRun.Device device = new BenchRun.Device() {
            public long availableBytes() {
                return avail == null ? Long.MAX_VALUE : ((Number) avail).longValue();
            }

            public Double peakRssMb() {
                return Memory.peakRssMb("Name:\tdemo\nVmHWM:\t  412345 kB\nVmRSS:\t 300000 kB\n");
            }

            public Map<String, Object> machine() {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("cpu", "Fake SoC \"X1\"");
                m.put("arch", "arm64-v8a");
                m.put("cores_logical", 8);
                m.put("ram_gb", 7.4);
                m.put("os", "Android 14 (API 34)");
                m.put("device_model", "Fake Phone");
                m.put("android_version", "14 (API 34)");
                return m;
            }
        };
        String bundleArg = (String) c.get("bundle");
        BenchRun run = new BenchRun(loader, device, clock, "0.1.0 (onnxruntime-genai test)", "2026-11-22T05:41:10Z");
        return Record.toJson(run.run(strings(c.get("extras")), bundleArg, new File((String) c.get("dir"))));
    }
}
