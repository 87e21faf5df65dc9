package dev.tidesync.android

import android.content.Context
import androidx.work.ListenableWorker.Result
import androidx.work.WorkInfo
import androidx.work.testing.TestListenableWorkerBuilder
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.withTimeout
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import java.util.concurrent.CancellationException
import java.util.concurrent.TimeUnit

/** SyncWorker built with TestListenableWorkerBuilder: outcome → Result, progress, cancellation. */
@RunWith(RobolectricTestRunner::class)
class SyncWorkerTest {
    private val context: Context = RuntimeEnvironment.getApplication()

    private fun worker(
        runner: SyncRunner?,
        attempt: Int = 0,
        progress: RecordingProgressUpdater = RecordingProgressUpdater(),
    ): SyncWorker = TestListenableWorkerBuilder.from(context, SyncWorker::class.java)
        .setWorkerFactory(SyncWorkerFactory { runner })
        .setProgressUpdater(progress)
        .setRunAttemptCount(attempt)
        .build()

    private fun run(runner: SyncRunner?, attempt: Int = 0): Result =
        worker(runner, attempt).startWork().get(WAIT_MS, TimeUnit.MILLISECONDS)

    @Test
    fun success_carries_the_counts() {
        val result = run(FakeRunner(synced()))
        assertTrue("$result", result is Result.Success)
        val out = result.outputData
        assertEquals(300L, out.getLong(SyncData.localObjectsKey("Product"), -1))
        assertEquals(120L, out.getLong(SyncData.localObjectsKey("Customer"), -1))
        assertEquals(420L, out.getLong(SyncData.KEY_OBJECTS_APPLIED, -1))
        assertEquals(listOf("Product", "Customer"), out.getStringArray(SyncData.KEY_SOURCES)?.toList())
    }

    @Test
    fun network_error_is_retry() {
        assertEquals(Result.retry(), run(FakeRunner(SyncOutcome.Network("connection refused"))))
    }

    @Test
    fun server_5xx_is_retry_and_4xx_is_failure() {
        assertEquals(Result.retry(), run(FakeRunner(SyncOutcome.Server(503, "maintenance"))))
        val r = run(FakeRunner(SyncOutcome.Server(404, "no such app")))
        assertTrue("$r", r is Result.Failure)
        assertEquals(SyncData.ERROR_SERVER, r.outputData.getString(SyncData.KEY_ERROR))
    }

    @Test
    fun unauthorized_is_failure_with_output_saying_so() {
        val r = run(FakeRunner(SyncOutcome.Unauthorized("invalid session")))
        assertTrue("$r", r is Result.Failure)
        assertEquals(SyncData.ERROR_UNAUTHORIZED, r.outputData.getString(SyncData.KEY_ERROR))
        assertEquals("invalid session", r.outputData.getString(SyncData.KEY_DETAIL))
    }

    @Test
    fun retry_becomes_failure_at_the_last_attempt() {
        val r = run(FakeRunner(SyncOutcome.Network("down")), attempt = SyncPolicy.DEFAULT_MAX_ATTEMPTS - 1)
        assertEquals(SyncData.ERROR_GAVE_UP, r.outputData.getString(SyncData.KEY_ERROR))
    }

    @Test
    fun runner_exception_is_failure_not_a_crash() {
        val r = run(FakeRunner(beforeReturn = { error("native call failed") }))
        assertTrue("$r", r is Result.Failure)
        assertEquals(SyncData.ERROR_INTERNAL, r.outputData.getString(SyncData.KEY_ERROR))
    }

    @Test
    fun without_init_the_default_constructor_fails_saying_so() {
        TideSync.close()
        val w = TestListenableWorkerBuilder.from(context, SyncWorker::class.java).build()
        val r = w.startWork().get(WAIT_MS, TimeUnit.MILLISECONDS)
        assertEquals(SyncData.ERROR_NOT_INITIALIZED, r.outputData.getString(SyncData.KEY_ERROR))
    }

    @Test
    fun progress_from_the_runner_reaches_set_progress() {
        val progress = RecordingProgressUpdater()
        val reported = CompletableDeferred<Unit>()
        val runner = FakeRunner(synced()) { onProgress ->
            onProgress(SyncProgress("Product", done = 100, total = 300))
            // The pass ends only once WorkManager got the progress: no race, no sleep.
            withTimeout(WAIT_MS) { reported.await() }
        }
        val future = worker(runner, progress = progress).startWork()
        val data = progress.updates.poll(WAIT_MS, TimeUnit.MILLISECONDS) ?: fail("no progress") as Nothing
        reported.complete(Unit)
        assertEquals("Product", data.getString(SyncData.KEY_PROGRESS_SOURCE))
        assertEquals(100L, data.getLong(SyncData.KEY_PROGRESS_DONE, -1))
        assertEquals(300L, data.getLong(SyncData.KEY_PROGRESS_TOTAL, -1))
        assertTrue(future.get(WAIT_MS, TimeUnit.MILLISECONDS) is Result.Success)
    }

    @Test
    fun stopping_the_worker_stops_the_engine_pass_and_waits_for_it() {
        val runner = BlockingRunner()
        val w = worker(runner)
        val future = w.startWork()
        awaitLatch(runner.entered, "pass started")

        // What WorkManager's WorkerWrapper does when it stops a work (constraint lost,
        // cancelled, quota): mark the worker stopped and cancel the future of startWork(), which
        // cancels doWork's coroutine. (SchedulerTest checks the same through WorkManager.)
        w.stop(WorkInfo.STOP_REASON_CONSTRAINT_CONNECTIVITY)
        future.cancel(true)

        awaitLatch(runner.returned, "blocking pass ended after stop")
        assertEquals(1, runner.stops.get())
        try {
            future.get(WAIT_MS, TimeUnit.MILLISECONDS)
            fail("a stopped worker has no result")
        } catch (_: CancellationException) {
            // expected
        }
    }

    @Test
    fun a_pass_that_ends_normally_is_not_stopped() {
        val runner = FakeRunner(synced())
        run(runner)
        assertEquals(0, runner.stops.get())
    }
}
