package dev.tidesync.android

import java.io.InputStream
import java.io.OutputStream
import java.net.InetAddress
import java.net.ServerSocket
import java.net.Socket
import java.net.SocketException
import java.net.URI
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.LinkedBlockingQueue
import kotlin.concurrent.thread

/**
 * A TCP forwarder on 127.0.0.1 in front of the reference server, switchable into failure modes,
 * so that the real engine meets a network failure, a 503 or a stalled request at a chosen point
 * (the engine must have logged in through it first). Only loopback; stops on [close].
 */
class LoopbackProxy(upstreamUrl: String) : AutoCloseable {
    enum class Mode {
        /** Forward every byte to the server. */
        FORWARD,

        /** Answer every request with `503 Service Unavailable`. */
        ANSWER_503,

        /** Read the request, report it on [stalled], never answer (until [close] or a switch). */
        STALL,
    }

    private val upstream = URI(upstreamUrl)
    private val server = ServerSocket(0, 50, InetAddress.getLoopbackAddress())
    private val open = ConcurrentHashMap.newKeySet<Socket>()

    @Volatile
    private var mode = Mode.FORWARD

    /** One element per request stalled in [Mode.STALL]. */
    val stalled = LinkedBlockingQueue<String>()

    /** The server's URL with the proxy's address (same path). */
    val url: String = URI(upstream.scheme, null, "127.0.0.1", server.localPort, upstream.path, null, null).toString()

    init {
        thread(isDaemon = true, name = "proxy-accept") {
            while (!server.isClosed) {
                val client = try {
                    server.accept()
                } catch (_: SocketException) {
                    break
                }
                open += client
                val m = mode
                thread(isDaemon = true, name = "proxy-$m") { serve(client, m) }
            }
        }
    }

    /** Switches mode; connections kept alive by the client's pool are closed to take it up. */
    fun switchTo(m: Mode) {
        mode = m
        open.forEach { runCatching { it.close() } }
        open.clear()
    }

    /** Stops listening: new connections are refused (a network failure for the engine). */
    fun refuseConnections() {
        server.close()
        switchTo(Mode.FORWARD)
    }

    override fun close() {
        server.close()
        switchTo(Mode.FORWARD)
    }

    private fun serve(client: Socket, m: Mode) {
        try {
            when (m) {
                Mode.FORWARD -> {
                    val up = Socket(InetAddress.getLoopbackAddress(), upstream.port)
                    open += up
                    val back = thread(isDaemon = true, name = "proxy-back") { pump(up.getInputStream(), client.getOutputStream()) }
                    pump(client.getInputStream(), up.getOutputStream())
                    back.join(WAIT_MS)
                    up.close()
                }
                Mode.ANSWER_503 -> {
                    readHead(client.getInputStream())
                    val body = "maintenance"
                    client.getOutputStream().write(
                        ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n" +
                            "Content-Length: ${body.length}\r\nConnection: close\r\n\r\n$body").toByteArray(),
                    )
                    client.getOutputStream().flush()
                }
                Mode.STALL -> {
                    stalled.put(readHead(client.getInputStream()).lineSequence().first())
                    while (client.getInputStream().read() >= 0) {
                        // hold the request until the client gives up or the proxy closes it
                    }
                }
            }
        } catch (_: Exception) {
            // a closed connection ends its thread
        } finally {
            runCatching { client.close() }
            open -= client
        }
    }

    private fun pump(from: InputStream, to: OutputStream) {
        val buf = ByteArray(16 * 1024)
        try {
            while (true) {
                val n = from.read(buf)
                if (n < 0) break
                to.write(buf, 0, n)
                to.flush()
            }
        } catch (_: Exception) {
            // either side closed
        }
        runCatching { to.close() }
    }

    /** The request line and headers, up to the blank line. */
    private fun readHead(input: InputStream): String {
        val head = StringBuilder()
        while (!head.endsWith("\r\n\r\n")) {
            val b = input.read()
            if (b < 0) break
            head.append(b.toChar())
        }
        return head.toString()
    }
}
