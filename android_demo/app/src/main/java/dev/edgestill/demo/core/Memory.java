package dev.edgestill.demo.core;

/**
 * Memory facts the app needs before and after loading a bundle, as pure logic: the peak resident
 * set from /proc/self/status (VmHWM, what Linux and Android count, the same figure as the
 * harness's ru_maxrss) and a load-or-refuse estimate.
 */
public final class Memory {
    /** Fixed cost besides weights and KV cache: onnxruntime arenas, tokenizer, app (measured
     * order of magnitude; the estimate only has to catch bundles that cannot fit at all). */
    static final long OVERHEAD_BYTES = 96L << 20;

    private Memory() {}

    /** VmHWM (peak RSS) from the text of /proc/self/status, in MiB; null when absent. */
    public static Double peakRssMb(String procStatus) {
        for (String line : procStatus.split("\n")) {
            if (!line.startsWith("VmHWM:")) continue;
            String[] parts = line.substring(6).trim().split("\\s+");
            try {
                double kb = Double.parseDouble(parts[0]);
                return parts.length > 1 && parts[1].equalsIgnoreCase("mB") ? kb : kb / 1024.0;
            } catch (NumberFormatException e) {
                return null;
            }
        }
        return null;
    }

    /** Bytes a bundle needs to run `totalTokens` (prompt + generated): its files + KV cache + overhead. */
    public static long needBytes(Bundle bundle, int totalTokens) {
        long layers = bundle.modelLong("num_layers", 0);
        long kvHeads = bundle.modelLong("num_kv_heads", 0);
        long headDim = bundle.modelLong("head_dim", 0);
        Object dtype = Bundle.castMap(bundle.manifest.get("model")).get("kv_dtype");
        long elem = "float16".equals(dtype) || "bfloat16".equals(dtype) ? 2 : 4;
        long kv = 2 * layers * kvHeads * headDim * (long) totalTokens * elem;
        return bundle.fileBytes() + kv + OVERHEAD_BYTES;
    }

    /** null when `needBytes` fits in `availableBytes`, else a one-line message saying what to do. */
    public static String notEnough(long needBytes, long availableBytes) {
        if (needBytes <= availableBytes) return null;
        return "not enough memory: the bundle needs about " + (needBytes >> 20) + " MiB, the phone has "
                + (availableBytes >> 20) + " MiB available; close other apps, or use a smaller bundle "
                + "(int8 or int4: edgestill export RECIPE export.precisions=[int4])";
    }
}
