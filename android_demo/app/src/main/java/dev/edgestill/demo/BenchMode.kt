/*
 * Benchmark mode, started from the command line (exact command in android_demo/README.md):
 *
 *   adb shell am start -S -W -n dev.edgestill.demo/.MainActivity \
 *       --es bundle bundle-int8 --es bench_out bench.json [--es threads 1,4] [--ei prompt_tokens 64] \
 *       [--ei gen_tokens 32] [--ei repetitions 5] [--ei warmup 1] [--es target adb://SERIAL] [--es run_id ID]
 *
 * The measuring logic is pure Java (core/BenchRun.java, tested in CI); this file gives it the
 * onnxruntime-genai loader and the phone's facts, and writes the records (a JSON list in the
 * schema of benchmarks/record.schema.json) to bench_out atomically: the file appears complete.
 */
package dev.edgestill.demo

import android.content.Context
import android.content.Intent
import dev.edgestill.demo.core.BenchRun
import dev.edgestill.demo.core.Record
import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone

class BenchMode(private val context: Context) {
    companion object {
        const val EXTRA_OUT = "bench_out"
        const val EXTRA_BUNDLE = "bundle"
        private val SETTING_KEYS = listOf("threads", "prompt_tokens", "gen_tokens", "repetitions", "warmup",
                                          "target", "run_id")

        fun wanted(intent: Intent?): Boolean = intent?.hasExtra(EXTRA_OUT) == true

        /** The setting extras as strings, whether given with --es or --ei. */
        private fun extrasOf(intent: Intent): Map<String, String> {
            val extras = intent.extras ?: return emptyMap()
            val out = HashMap<String, String>()
            for (key in SETTING_KEYS) {
                @Suppress("DEPRECATION")
                extras.get(key)?.let { out[key] = it.toString() }
            }
            return out
        }
    }

    private val device = object : BenchRun.Device {
        override fun availableBytes(): Long = DeviceInfo.availableBytes(context)
        override fun peakRssMb(): Double? = DeviceInfo.peakRssMb()
        override fun machine(): Map<String, Any?> = DeviceInfo.machine(context)
    }

    /** Runs every requested measurement and writes bench_out; returns the file and the records. */
    fun run(intent: Intent): Pair<File, List<Map<String, Any?>>> {
        val out = Storage.resolveOut(context, intent.getStringExtra(EXTRA_OUT) ?: "bench.json")
        val bundleArg = intent.getStringExtra(EXTRA_BUNDLE) ?: ""
        val engineVersion = "${BuildConfig.VERSION_NAME} (onnxruntime-genai ${BuildConfig.GENAI_VERSION})"
        val loader = BenchRun.Loader { dir, threads -> GenaiEngine.load(dir, threads) }
        val run = BenchRun(loader, device, { System.nanoTime() }, engineVersion, utcNow())
        val records = run.run(extrasOf(intent), bundleArg, Storage.resolveBundle(context, bundleArg))
        Storage.writeAtomically(out, Record.toJson(records))
        return out to records
    }

    private fun utcNow(): String {
        val format = SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss'Z'", Locale.US)
        format.timeZone = TimeZone.getTimeZone("UTC")
        return format.format(Date())
    }
}
