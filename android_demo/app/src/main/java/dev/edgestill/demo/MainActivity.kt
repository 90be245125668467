/*
 * The app's one screen: a streaming chat with an edgestill bundle, fully offline (the app holds
 * no network permission), and the benchmark mode when started with a bench_out extra
 * (BenchMode.kt). Model work runs on one background thread; every failure is shown on screen.
 */
package dev.edgestill.demo

import android.app.Activity
import android.content.Intent
import android.graphics.Color
import android.os.Bundle
import android.text.InputType
import android.view.ViewGroup.LayoutParams.MATCH_PARENT
import android.view.ViewGroup.LayoutParams.WRAP_CONTENT
import android.widget.Button
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.TextView
import java.io.File
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import dev.edgestill.demo.core.Bundle as EdgeBundle

class MainActivity : Activity() {
    companion object {
        private const val PICK_BUNDLE = 1
        private const val MAX_NEW_TOKENS = 256
    }

    private val worker: ExecutorService = Executors.newSingleThreadExecutor()
    private lateinit var status: TextView
    private lateinit var transcript: TextView
    private lateinit var scroll: ScrollView
    private lateinit var input: EditText
    private lateinit var send: Button
    @Volatile private var engine: GenaiEngine? = null
    @Volatile private var bundle: EdgeBundle? = null
    @Volatile private var cancelled = false

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        buildScreen()
        handle(intent)
    }

    override fun onNewIntent(intent: Intent) {
        super.onNewIntent(intent)
        setIntent(intent)
        handle(intent)
    }

    private fun handle(intent: Intent?) {
        if (intent != null && BenchMode.wanted(intent)) startBenchmark(intent) else loadFirstBundle()
    }

    private fun buildScreen() {
        val pad = (12 * resources.displayMetrics.density).toInt()
        status = TextView(this).apply { setPadding(pad, pad, pad, pad) }
        transcript = TextView(this).apply { setPadding(pad, 0, pad, pad); setTextIsSelectable(true) }
        scroll = ScrollView(this).apply { addView(transcript) }
        input = EditText(this).apply {
            hint = "Message"
            inputType = InputType.TYPE_CLASS_TEXT or InputType.TYPE_TEXT_FLAG_MULTI_LINE
        }
        send = Button(this).apply { text = "Send"; setOnClickListener { onSend() } }
        val open = Button(this).apply { text = "Open bundle"; setOnClickListener { pickBundle() } }
        val row = LinearLayout(this).apply {
            orientation = LinearLayout.HORIZONTAL
            addView(input, LinearLayout.LayoutParams(0, WRAP_CONTENT, 1f))
            addView(send)
            addView(open)
        }
        setContentView(LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            addView(status, LinearLayout.LayoutParams(MATCH_PARENT, WRAP_CONTENT))
            addView(scroll, LinearLayout.LayoutParams(MATCH_PARENT, 0, 1f))
            addView(row, LinearLayout.LayoutParams(MATCH_PARENT, WRAP_CONTENT))
        })
        send.isEnabled = false
    }

    private fun showStatus(text: String, isError: Boolean = false) = runOnUiThread {
        status.text = text
        status.setTextColor(if (isError) Color.rgb(176, 0, 32) else Color.DKGRAY)
    }

    private fun appendText(text: String) = runOnUiThread {
        transcript.append(text)
        scroll.post { scroll.fullScroll(ScrollView.FOCUS_DOWN) }
    }

    private fun loadFirstBundle() {
        if (engine != null) return
        val found = Storage.listBundles(this)
        if (found.isEmpty()) {
            showStatus("No bundle yet. Tap Open bundle, or: adb push build/NAME/bundle-int8 " +
                       "/sdcard/Android/data/$packageName/files/bundles/", isError = true)
        } else {
            load(found.first())
        }
    }

    /** Opens [dir] (manifest and file sizes checked, memory estimated) and loads it, off the UI thread. */
    private fun load(dir: File) {
        send.isEnabled = false
        showStatus("Loading ${dir.name} ...")
        worker.execute {
            try {
                engine?.close()
                engine = null
                val opened = EdgeBundle.open(dir, false)
                val need = dev.edgestill.demo.core.Memory.needBytes(opened, MAX_NEW_TOKENS + 512)
                dev.edgestill.demo.core.Memory.notEnough(need, DeviceInfo.availableBytes(this))?.let {
                    throw EdgeBundle.BundleException(it)
                }
                engine = GenaiEngine.load(dir, null)
                bundle = opened
                showStatus("${opened.name()} ready, offline (${opened.fileBytes() shr 20} MiB)")
                runOnUiThread { send.isEnabled = true }
            } catch (e: EdgeBundle.BundleException) {
                showStatus(e.message ?: "cannot open ${dir.name}", isError = true)
            } catch (e: OutOfMemoryError) {
                showStatus("Not enough memory to load ${dir.name}; close other apps or use a smaller bundle", true)
            } catch (e: Exception) {
                showStatus("Cannot load ${dir.name}: ${e.message}", isError = true)
            }
        }
    }

    private fun onSend() {
        val text = input.text.toString().trim()
        val current = engine ?: return
        val opened = bundle ?: return
        if (text.isEmpty()) return
        input.setText("")
        send.isEnabled = false
        cancelled = false
        appendText("\nYou: $text\nModel: ")
        val eos = opened.manifest["tokens"].let { tokens ->
            ((tokens as? Map<*, *>)?.get("eos_token_ids") as? List<*>)?.mapNotNull { (it as? Long)?.toInt() }?.toSet()
        } ?: emptySet()
        val context = opened.modelLong("context_length", 2048).toInt()
        worker.execute {
            try {
                current.chat(opened.formatPrompt(text), MAX_NEW_TOKENS, context, eos, { cancelled }) { appendText(it) }
                appendText("\n")
            } catch (e: Exception) {
                appendText("\n")
                showStatus("Generation failed: ${e.message}", isError = true)
            } finally {
                runOnUiThread { send.isEnabled = true }
            }
        }
    }

    private fun pickBundle() {
        startActivityForResult(Intent(Intent.ACTION_OPEN_DOCUMENT_TREE), PICK_BUNDLE)
    }

    @Deprecated("Activity result API needs androidx; this app uses the platform Activity only")
    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        val uri = data?.data
        if (requestCode != PICK_BUNDLE || resultCode != RESULT_OK || uri == null) return
        send.isEnabled = false
        worker.execute {
            try {
                val dir = BundleImport.copy(this, uri) { showStatus(it) }
                runOnUiThread { load(dir) }
            } catch (e: Exception) {
                showStatus("Cannot copy the picked folder: ${e.message}", isError = true)
            }
        }
    }

    private fun startBenchmark(intent: Intent) {
        send.isEnabled = false
        showStatus("Benchmark running; keep the screen on ...")
        worker.execute {
            try {
                val (file, records) = BenchMode(this).run(intent)
                val errors = records.mapNotNull { it["error"] as? String }
                if (errors.isEmpty()) {
                    showStatus("Benchmark done: ${records.size} record(s) in $file")
                } else {
                    showStatus("Benchmark error (written to $file): ${errors.first()}", isError = true)
                }
                records.forEach { appendText(summary(it) + "\n") }
                if (intent.getBooleanExtra("exit", false)) runOnUiThread { finish() }
            } catch (e: Exception) {
                showStatus("Benchmark could not write its result: ${e.message}", isError = true)
            }
        }
    }

    private fun summary(r: Map<String, Any?>): String =
        if (r["status"] == "ok") {
            "${r["name"]} threads=${r["threads"]}: load ${r["load_s"]} s, TTFT ${r["ttft_ms_p50"]} ms, " +
                "decode ${r["decode_tok_s_p50"]} tok/s, peak RSS ${r["peak_rss_mb"]} MiB"
        } else {
            "${r["name"]}: error: ${r["error"]}"
        }

    override fun onDestroy() {
        cancelled = true
        worker.execute { engine?.close(); engine = null }
        worker.shutdown()
        super.onDestroy()
    }
}
