/*
 * Copies a bundle folder the user picked with the system folder picker (ACTION_OPEN_DOCUMENT_TREE)
 * into the app's files/bundles/<name>/, so onnxruntime-genai can open it by path. Files are
 * copied to a temp folder first and renamed into place, so a cancelled copy leaves nothing half-done.
 */
package dev.edgestill.demo

import android.content.Context
import android.net.Uri
import android.provider.DocumentsContract
import java.io.File
import java.io.IOException

object BundleImport {
    /** Copies every file of the picked tree [treeUri]; returns the new bundle folder. */
    fun copy(context: Context, treeUri: Uri, progress: (String) -> Unit): File {
        val resolver = context.contentResolver
        val rootId = DocumentsContract.getTreeDocumentId(treeUri)
        val name = rootId.substringAfterLast('/').substringAfterLast(':').ifEmpty { "bundle" }
        val dest = File(File(context.filesDir, "bundles"), name)
        val tmp = File(dest.parentFile, ".$name.partial")
        tmp.deleteRecursively()
        tmp.mkdirs()
        val children = DocumentsContract.buildChildDocumentsUriUsingTree(treeUri, rootId)
        val columns = arrayOf(DocumentsContract.Document.COLUMN_DOCUMENT_ID,
                              DocumentsContract.Document.COLUMN_DISPLAY_NAME,
                              DocumentsContract.Document.COLUMN_MIME_TYPE)
        resolver.query(children, columns, null, null, null)?.use { cursor ->
            while (cursor.moveToNext()) {
                if (cursor.getString(2) == DocumentsContract.Document.MIME_TYPE_DIR) continue
                val fileName = cursor.getString(1)
                progress("copying $fileName ...")
                val uri = DocumentsContract.buildDocumentUriUsingTree(treeUri, cursor.getString(0))
                val input = resolver.openInputStream(uri) ?: throw IOException("cannot read $fileName")
                input.use { src -> File(tmp, fileName).outputStream().use { src.copyTo(it, 1 shl 20) } }
            }
        } ?: throw IOException("cannot list the picked folder")
        dest.deleteRecursively()
        if (!tmp.renameTo(dest)) throw IOException("cannot move the copied bundle to $dest")
        return dest
    }
}
