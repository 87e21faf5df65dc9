package dev.tidesync

import org.junit.jupiter.api.Assertions.fail
import java.nio.file.Path
import java.util.UUID
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit

/** Deadline for anything that should happen "soon"; reaching it means a hang. */
const val WAIT_MS = 30_000L

/** The reference server started by scripts/test-kotlin.sh (transcripts app). */
val syncUrl: String = System.getProperty("tidesync.syncUrl")
    ?.takeIf { it.isNotEmpty() }
    ?: error("tidesync.syncUrl is not set: run through scripts/test-kotlin.sh")

/** A fresh user: Customer is per user (120 objects each), Product shared (300). */
fun newUser() = "k-" + UUID.randomUUID()

/** An engine over `dir/c.db` with Product and Customer defined, polling off. */
fun openEngine(dir: Path, pageSize: UInt = 2000u): Engine {
    val e = Engine.open(
        EngineConfig(
            dbPath = dir.resolve("c.db").toString(),
            syncServer = syncUrl,
            pageSize = pageSize,
            pollInterval = 0u,
            filesDir = dir.resolve("files").toString(),
            readTimeoutMs = 20_000u,
        ),
    )
    e.defineSource(SourceDefinition("Product", Partition.APP, priority = 1))
    e.defineSource(SourceDefinition("Customer", Partition.USER, priority = 2))
    return e
}

/** Runs [block] with an engine, then shuts it down and frees it. */
inline fun <T> withEngine(dir: Path, pageSize: UInt = 2000u, block: (Engine) -> T): T {
    val e = openEngine(dir, pageSize)
    try {
        return block(e)
    } finally {
        e.shutdown()
        e.close()
    }
}

/** A notification and the thread it arrived on. */
data class Received(val n: SyncNotification, val thread: Thread, val threadName: String)

/** A listener that records into a queue; tests wait on it with deadlines, never sleep. */
class Recorder : SyncListener {
    val queue = LinkedBlockingQueue<Received>()

    override fun onNotification(notification: SyncNotification) {
        val t = Thread.currentThread()
        queue.put(Received(notification, t, t.name))
    }

    /** The next notification, or null after [ms]. */
    fun poll(ms: Long): Received? = queue.poll(ms, TimeUnit.MILLISECONDS)

    /** Everything up to and including the first notification matching [last]. */
    fun until(ms: Long = WAIT_MS, last: (SyncNotification) -> Boolean): List<Received> {
        val deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(ms)
        val out = mutableListOf<Received>()
        while (true) {
            val left = deadline - System.nanoTime()
            val r = queue.poll(left.coerceAtLeast(0), TimeUnit.NANOSECONDS)
                ?: fail("no matching notification within $ms ms; got ${out.map { it.n.brief() }}")
            out += r
            if (last(r.n)) return out
        }
    }

    /** Everything up to the run event (`sourceName == null`). */
    fun untilRunEnd(ms: Long = WAIT_MS) = until(ms) { it.sourceName == null }
}

/** A compact form for assertions and messages: `Product IN_PROGRESS 50/300`. */
fun SyncNotification.brief(): String =
    "${sourceName ?: "*"} $status${if (isFinal) " final" else ""} $cumulativeCount/${totalCount ?: "-"}"
