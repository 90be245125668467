/*
 * What a benchmark record says about the phone (the schema's `machine`), its free memory, and
 * its peak resident set (VmHWM from /proc/self/status, the same figure as the harness's ru_maxrss).
 */
package dev.edgestill.demo

import android.app.ActivityManager
import android.content.Context
import android.os.Build
import dev.edgestill.demo.core.Memory
import dev.edgestill.demo.core.Stats
import java.io.File

object DeviceInfo {
    private fun memoryInfo(context: Context): ActivityManager.MemoryInfo {
        val manager = context.getSystemService(Context.ACTIVITY_SERVICE) as ActivityManager
        val info = ActivityManager.MemoryInfo()
        manager.getMemoryInfo(info)
        return info
    }

    /** Bytes the system says are available to apps now. */
    fun availableBytes(context: Context): Long = memoryInfo(context).availMem

    /** Peak resident set of this process in MiB, or null where /proc is unreadable. */
    fun peakRssMb(): Double? = try {
        Memory.peakRssMb(File("/proc/self/status").readText())
    } catch (e: Exception) {
        null
    }

    /** The SoC name: Build.SOC_* on Android 12+, else the Hardware line of /proc/cpuinfo. */
    private fun cpu(): String {
        if (Build.VERSION.SDK_INT >= 31 && Build.SOC_MODEL != Build.UNKNOWN) {
            return "${Build.SOC_MANUFACTURER} ${Build.SOC_MODEL}"
        }
        val hardware = try {
            File("/proc/cpuinfo").readLines().firstOrNull { it.startsWith("Hardware") }
                ?.substringAfter(':')?.trim()
        } catch (e: Exception) {
            null
        }
        return hardware ?: Build.HARDWARE
    }

    fun androidVersion(): String = "${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})"

    /** The record's `machine` object. */
    fun machine(context: Context): Map<String, Any?> = linkedMapOf(
        "cpu" to cpu(),
        "arch" to Build.SUPPORTED_ABIS.firstOrNull(),
        "cores_logical" to Runtime.getRuntime().availableProcessors(),
        "cores_physical" to null,
        "ram_gb" to Stats.round(memoryInfo(context).totalMem / (1024.0 * 1024.0 * 1024.0), 1),
        "os" to "Android ${androidVersion()}",
        "python" to null,
        "onnxruntime" to BuildConfig.ORT_VERSION,
        "tool_version" to BuildConfig.VERSION_NAME,
        "git_commit" to null,
        "load_avg_1m" to null,
        "hostname" to null,
        "device_model" to "${Build.MANUFACTURER} ${Build.MODEL}",
        "android_version" to androidVersion(),
    )
}
