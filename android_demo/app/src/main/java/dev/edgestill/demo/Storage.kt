/*
 * Where the app finds bundles and writes benchmark files.
 *
 * A relative bundle path is looked up under the app's external files folder
 * (/sdcard/Android/data/dev.edgestill.demo/files/bundles/, where `adb push` can write without
 * root) and then under its internal files folder (files/bundles/, where the folder picker
 * copies to). A relative bench_out goes to the external files folder, so `adb pull` can fetch it.
 */
package dev.edgestill.demo

import android.content.Context
import java.io.File
import java.io.IOException

object Storage {
    fun bundleRoots(context: Context): List<File> =
        listOfNotNull(context.getExternalFilesDir(null), context.filesDir).map { File(it, "bundles") }

    fun resolveBundle(context: Context, arg: String): File {
        if (arg.startsWith("/")) return File(arg)
        val roots = bundleRoots(context)
        return roots.map { File(it, arg) }.firstOrNull { it.isDirectory } ?: File(roots.first(), arg)
    }

    /** Every folder under the bundle roots that holds a manifest.json. */
    fun listBundles(context: Context): List<File> =
        bundleRoots(context).flatMap { it.listFiles()?.toList() ?: emptyList() }
            .filter { File(it, "manifest.json").isFile }.sortedBy { it.name }

    fun resolveOut(context: Context, arg: String): File =
        if (arg.startsWith("/")) File(arg) else File(context.getExternalFilesDir(null) ?: context.filesDir, arg)

    /** Writes [text] to a temp file beside [file], then renames it over [file]. */
    fun writeAtomically(file: File, text: String) {
        file.parentFile?.mkdirs()
        val tmp = File(file.parentFile, ".${file.name}.tmp")
        tmp.writeText(text)
        if (!tmp.renameTo(file)) {
            tmp.delete()
            throw IOException("cannot write $file; give bench_out a path inside the app's files folder")
        }
    }
}
