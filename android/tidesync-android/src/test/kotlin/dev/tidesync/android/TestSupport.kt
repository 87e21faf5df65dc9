package dev.tidesync.android

import android.content.Context
import androidx.work.Data
import androidx.work.ProgressUpdater
import androidx.work.WorkInfo
import androidx.work.WorkManager
import com.google.common.util.concurrent.Futures
import com.google.common.util.concurrent.ListenableFuture
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeout
import org.junit.Assert.assertTrue
import java.util.UUID
import java.util.concurrent.CountDownLatch
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger

/** Deadline for anything that should happen "soon": reaching it means a hang. Tests never sleep. */
const val WAIT_MS = 30_000L

/** Waits for [latch] with the deadline; fails with [what] otherwise. */
fun awaitLatch(latch: CountDownLatch, what: String) =
    assertTrue("$what: not within $WAIT_MS ms", latch.await(WAIT_MS, TimeUnit.MILLISECONDS))

/** Waits (deadline) until the work [id] has a WorkInfo matching [predicate], and returns it. */
fun WorkManager.awaitWorkInfo(id: UUID, predicate: (WorkInfo) -> Boolean): WorkInfo = runBlocking {
    withTimeout(WAIT_MS) { getWorkInfoByIdFlow(id).first { it != null && predicate(it) }!! }
}

/** Waits (deadline) until the work [id] reaches [state]. */
fun WorkManager.awaitState(id: UUID, state: WorkInfo.State): WorkInfo = awaitWorkInfo(id) { it.state == state }

/**
 * A [SyncRunner] answering [outcome] at once; counts passes and stops and signals each pass on
 * [passStarted]. [beforeReturn] runs first (e.g. to report progress and wait for it).
 */
class FakeRunner(
    @Volatile var outcome: SyncOutcome = synced(),
    private val beforeReturn: suspend ((SyncProgress) -> Unit) -> Unit = {},
) : SyncRunner {
    val passes = AtomicInteger()
    val stops = AtomicInteger()
    val passStarted = LinkedBlockingQueue<Int>()

    override suspend fun syncOnce(onProgress: (SyncProgress) -> Unit): SyncOutcome {
        passStarted.put(passes.incrementAndGet())
        beforeReturn(onProgress)
        return outcome
    }

    override fun stop() {
        stops.incrementAndGet()
    }

    /** Waits for the next pass to start. */
    fun awaitPass() = assertTrue(
        "no sync pass within $WAIT_MS ms",
        passStarted.poll(WAIT_MS, TimeUnit.MILLISECONDS) != null,
    )
}

/**
 * A [SyncRunner] behaving like the native engine: its pass blocks a thread, deaf to coroutine
 * cancellation, until [stop] (or [release]) lets it go; then it answers [SyncOutcome.Stopped].
 */
class BlockingRunner : SyncRunner {
    val entered = CountDownLatch(1)
    val returned = CountDownLatch(1)
    val stops = AtomicInteger()
    private val gate = CountDownLatch(1)

    override suspend fun syncOnce(onProgress: (SyncProgress) -> Unit): SyncOutcome = withContext(Dispatchers.IO) {
        entered.countDown()
        try {
            check(gate.await(WAIT_MS, TimeUnit.MILLISECONDS)) { "the blocking pass was never stopped" }
            SyncOutcome.Stopped
        } finally {
            returned.countDown()
        }
    }

    override fun stop() {
        stops.incrementAndGet()
        gate.countDown()
    }

    /** Ends the pass without a stop (test clean-up). */
    fun release() = gate.countDown()
}

/** A [ProgressUpdater] recording every progress `Data` it is given. */
class RecordingProgressUpdater : ProgressUpdater {
    val updates = LinkedBlockingQueue<Data>()

    override fun updateProgress(context: Context, id: UUID, data: Data): ListenableFuture<Void> {
        updates.put(data)
        @Suppress("UNCHECKED_CAST") // Guava types it Void?, WorkManager Void: the same null
        return Futures.immediateVoidFuture() as ListenableFuture<Void>
    }
}

/** A successful pass over Product and Customer with the reference server's counts. */
fun synced() = SyncOutcome.Synced(
    listOf(
        SourceCount("Product", pulled = 300, pushed = 0, localObjects = 300),
        SourceCount("Customer", pulled = 120, pushed = 2, localObjects = 120),
    ),
)
