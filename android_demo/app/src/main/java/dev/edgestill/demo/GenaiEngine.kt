/*
 * A bundle loaded with onnxruntime-genai (the AAR's ai.onnxruntime.genai Java API): the
 * benchmark's Engine (pure-Java interface in core/) and the chat screen's streaming generator.
 * onnxruntime-genai reads the bundle's genai_config.json, model.onnx and tokenizer files itself.
 */
package dev.edgestill.demo

import ai.onnxruntime.genai.Config
import ai.onnxruntime.genai.Generator
import ai.onnxruntime.genai.GeneratorParams
import ai.onnxruntime.genai.Model
import ai.onnxruntime.genai.Tokenizer
import dev.edgestill.demo.core.Engine
import java.io.File
import java.lang.reflect.InvocationTargetException

class GenaiEngine private constructor(
    private val model: Model,
    private val tokenizer: Tokenizer,
    /** true when the requested intra-op thread count reached onnxruntime (see [load]). */
    private val appliedThreads: Boolean,
) : Engine {

    companion object {
        /**
         * Loads the bundle folder [dir]. With [threads], asks onnxruntime for that many intra-op
         * threads through Config.overlay + Model(Config), which only recent onnxruntime-genai
         * releases have; they are looked up by reflection so the app also builds against older
         * AARs, where the bundle's genai_config.json decides (threadsApplied = false).
         */
        fun load(dir: File, threads: Int?): GenaiEngine {
            val withThreads = threads?.let { openWithThreads(dir, it) }
            val model = withThreads ?: Model(dir.path)
            return GenaiEngine(model, Tokenizer(model), withThreads != null)
        }

        private fun openWithThreads(dir: File, threads: Int): Model? {
            val overlay = try {
                Config::class.java.getMethod("overlay", String::class.java)
            } catch (e: NoSuchMethodException) {
                return null
            }
            val constructor = try {
                Model::class.java.getConstructor(Config::class.java)
            } catch (e: NoSuchMethodException) {
                return null
            }
            val json = "{\"model\": {\"decoder\": {\"session_options\": {\"intra_op_num_threads\": $threads}}}}"
            val config = Config(dir.path)
            try {
                overlay.invoke(config, json)
                return constructor.newInstance(config) as Model
            } catch (e: InvocationTargetException) {
                throw (e.cause as? Exception) ?: e
            } finally {
                config.close()
            }
        }
    }

    override fun threadsApplied(): Boolean = appliedThreads

    override fun encode(text: String): IntArray = tokenizer.encode(text).use { it.getSequence(0) }

    override fun start(promptIds: IntArray, newTokens: Int): Engine.Run {
        val total = (promptIds.size + newTokens).toDouble()
        val params = GeneratorParams(model)
        params.setSearchOption("max_length", total)
        params.setSearchOption("min_length", total) // end-of-sequence cannot end the run early
        params.setSearchOption("do_sample", false)
        return GenaiRun(Generator(model, params), params, promptIds)
    }

    /** One generation: the prompt is appended (prefill) on the first [next], inside the timing. */
    private class GenaiRun(
        private val generator: Generator,
        private val params: GeneratorParams,
        private val prompt: IntArray,
    ) : Engine.Run {
        private var started = false

        override fun next(): Int {
            if (!started) {
                generator.appendTokens(prompt)
                started = true
            }
            if (generator.isDone()) return -1
            generator.generateNextToken()
            return generator.getLastTokenInSequence(0)
        }

        override fun close() {
            generator.close()
            params.close()
        }
    }

    /**
     * Streams the answer to [prompt] (already chat-formatted): calls [onPiece] with each decoded
     * piece, stops at an end-of-sequence id, at [maxNewTokens] or when [cancelled] says so.
     */
    fun chat(prompt: String, maxNewTokens: Int, contextLength: Int, eosIds: Set<Int>,
             cancelled: () -> Boolean, onPiece: (String) -> Unit) {
        val ids = encode(prompt)
        if (ids.size >= contextLength) {
            throw IllegalArgumentException("the message is ${ids.size} tokens, the model reads at most $contextLength; shorten it")
        }
        GeneratorParams(model).use { params ->
            params.setSearchOption("max_length", minOf(ids.size + maxNewTokens, contextLength).toDouble())
            params.setSearchOption("do_sample", false)
            tokenizer.createStream().use { stream ->
                Generator(model, params).use { generator ->
                    generator.appendTokens(ids)
                    while (!generator.isDone() && !cancelled()) {
                        generator.generateNextToken()
                        val token = generator.getLastTokenInSequence(0)
                        if (token in eosIds) break
                        onPiece(stream.decode(token))
                    }
                }
            }
        }
    }

    override fun close() {
        tokenizer.close()
        model.close()
    }
}
