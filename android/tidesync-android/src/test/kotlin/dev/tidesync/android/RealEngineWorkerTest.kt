package dev.tidesync.android

import android.content.Context
import androidx.work.ListenableWorker.Result
import androidx.work.WorkInfo
import androidx.work.testing.TestListenableWorkerBuilder
import dev.tidesync.Partition
import dev.tidesync.SourceDefinition
import dev.tidesync.SyncNotification
import dev.tidesync.SyncStatus
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.cancel
import kotlinx.coroutines.launch
import org.junit.After
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.shadows.ShadowLog
import java.io.File
import java.util.UUID
import java.util.concurrent.CancellationException
import java.util.concurrent.CountDownLatch
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit

/**
 * SyncWorker against the real engine (the cdylib through JNA, `jna.library.path` = target/debug)
 * and the reference server on loopback (transcripts app: Product 300, Customer 120 per user),
 * started by scripts/test-android.sh. A [LoopbackProxy] in front of the server injects a refused
 * connection, a 503 or a stalled request after login.
 */
@RunWith(RobolectricTestRunner::class)
class RealEngineWorkerTest {
    private val context: Context = RuntimeEnvironment.getApplication()
    private lateinit var proxy: LoopbackProxy
    private val scope = CoroutineScope(Dispatchers.Default)

    /** Run events (`sourceName == null`) of TideSync.notifications, collected from init on. */
    private val runEvents = LinkedBlockingQueue<SyncNotification>()

    /** The engine runner, recording how each pass ended and when it returned. */
    private inner class Recording(private val inner: SyncRunner) : SyncRunner {
        val outcomes = LinkedBlockingQueue<SyncOutcome>()
        val stops = CountDownLatch(1)
        val returned = CountDownLatch(1)

        override suspend fun syncOnce(onProgress: (SyncProgress) -> Unit): SyncOutcome =
            try {
                inner.syncOnce(onProgress).also { outcomes.put(it) } // a cancelled pass has none
            } finally {
                returned.countDown()
            }

        override fun stop() {
            stops.countDown()
            inner.stop()
        }

        fun nextOutcome(): SyncOutcome =
            outcomes.poll(WAIT_MS, TimeUnit.MILLISECONDS) ?: throw AssertionError("no pass ended within $WAIT_MS ms")
    }

    @Before
    fun setUp() {
        ShadowLog.stream = System.out // the worker's log in the surefire report of this class
        val url = System.getProperty("tidesync.syncUrl").orEmpty()
        assumeTrue("tidesync.syncUrl is not set: run through scripts/test-android.sh", url.isNotEmpty())
        proxy = LoopbackProxy(url)
        TideSync.close() // another class may have left it open
        TideSync.init(
            context,
            TideSyncConfig(
                syncServer = proxy.url,
                sources = listOf(
                    SourceDefinition("Product", Partition.APP, priority = 1),
                    SourceDefinition("Customer", Partition.USER, priority = 2),
                ),
                pageSize = 100u, // several pages per source: progress notifications
                pollIntervalSeconds = 0u, // WorkManager syncs; no polling of the engine's own
                readTimeoutMs = 5_000u, // bounds the stalled request of the stop test
            ),
        )
        scope.launch {
            TideSync.notifications.collect { if (it.sourceName == null) runEvents.put(it) }
        }
    }

    @After
    fun tearDown() {
        scope.cancel()
        TideSync.close()
        if (::proxy.isInitialized) proxy.close()
    }

    private fun login() = TideSync.engine.login("a-" + UUID.randomUUID(), "password")

    private fun recordingWorker(): Pair<SyncWorker, Recording> {
        val runner = Recording(TideSync.runnerOrNull()!!)
        val worker = TestListenableWorkerBuilder.from(context, SyncWorker::class.java)
            .setWorkerFactory(SyncWorkerFactory { runner })
            .build()
        return worker to runner
    }

    private fun SyncWorker.result(): Result = startWork().get(WAIT_MS, TimeUnit.MILLISECONDS)

    @Test
    fun worker_syncs_the_transcripts_app_and_reports_the_counts() {
        login()
        // The default constructor, as WorkManager's default factory calls it: TideSync's engine.
        val worker = TestListenableWorkerBuilder.from(context, SyncWorker::class.java)
            .setProgressUpdater(RecordingProgressUpdater())
            .build()

        val result = worker.result()

        assertTrue("$result", result is Result.Success)
        val out = result.outputData
        assertEquals(300L, out.getLong(SyncData.localObjectsKey("Product"), -1))
        assertEquals(120L, out.getLong(SyncData.localObjectsKey("Customer"), -1))
        assertEquals(420L, out.getLong(SyncData.KEY_OBJECTS_APPLIED, -1))
        // The database is in noBackupFilesDir, and a second pass has nothing new to apply.
        assertEquals(File(context.noBackupFilesDir, "tidesync/tidesync.db").path, TideSync.databasePath)
        assertTrue(File(TideSync.databasePath!!).isFile)
        val again = worker(context).result()
        assertEquals(300L, again.outputData.getLong(SyncData.localObjectsKey("Product"), -1))
        assertEquals(0L, again.outputData.getLong(SyncData.KEY_OBJECTS_APPLIED, -1))
    }

    private fun worker(context: Context): SyncWorker =
        TestListenableWorkerBuilder.from(context, SyncWorker::class.java).build()

    @Test
    fun without_login_the_worker_fails_saying_so() {
        val result = worker(context).result()
        assertTrue("$result", result is Result.Failure)
        // The engine syncs without a session and the server answers 401 (UNAUTHORIZED), or it
        // reports CLIENT_NOT_LOGGED_IN itself: either way the app must log in, nothing to retry.
        val error = result.outputData.getString(SyncData.KEY_ERROR)
        assertTrue("$error", error == SyncData.ERROR_UNAUTHORIZED || error == SyncData.ERROR_NOT_LOGGED_IN)
    }

    @Test
    fun refused_connection_is_a_network_outcome_and_retry() {
        login()
        proxy.refuseConnections()
        val (worker, runner) = recordingWorker()

        assertEquals(Result.retry(), worker.result())
        assertTrue("${runner.outcomes}", runner.nextOutcome() is SyncOutcome.Network)
    }

    @Test
    fun server_503_is_retry() {
        login()
        proxy.switchTo(LoopbackProxy.Mode.ANSWER_503)
        val (worker, runner) = recordingWorker()

        assertEquals(Result.retry(), worker.result())
        val outcome = runner.nextOutcome()
        assertTrue("$outcome", outcome is SyncOutcome.Server)
    }

    @Test
    fun stopping_the_worker_stops_the_engine_and_the_next_pass_resumes() {
        login()
        proxy.switchTo(LoopbackProxy.Mode.STALL)
        val (worker, runner) = recordingWorker()
        val future = worker.startWork()
        assertNotNull("no request reached the server", proxy.stalled.poll(WAIT_MS, TimeUnit.MILLISECONDS))

        // As WorkManager stops a work: the worker calls Engine.stopSync, the run is cancelled.
        worker.stop(WorkInfo.STOP_REASON_CONSTRAINT_CONNECTIVITY)
        future.cancel(true)

        awaitLatch(runner.stops, "stop reached the runner")
        val end = runEvents.poll(WAIT_MS, TimeUnit.MILLISECONDS) ?: throw AssertionError("no run event")
        assertEquals(SyncStatus.CANCELLED, end.status) // stopped, not a timeout of the stalled request
        awaitLatch(runner.returned, "the engine's pass returned")
        assertTrue("engine idle after the stop", TideSync.engine.waitIdle(WAIT_MS.toUInt()))
        try {
            future.get(WAIT_MS, TimeUnit.MILLISECONDS)
            throw AssertionError("a stopped worker has no result")
        } catch (_: CancellationException) {
            // expected
        }

        proxy.switchTo(LoopbackProxy.Mode.FORWARD)
        val next = worker(context).result()
        assertTrue("$next", next is Result.Success)
        assertEquals(300L, next.outputData.getLong(SyncData.localObjectsKey("Product"), -1))
        assertEquals(120L, next.outputData.getLong(SyncData.localObjectsKey("Customer"), -1))
    }

    @Test
    fun init_is_idempotent_and_close_then_init_reopens_the_same_database() {
        val first = TideSync.engine
        assertTrue(first === TideSync.init(context, TideSyncConfig(syncServer = "http://127.0.0.1:1/ignored/")))
        login()
        val user = first.userName()
        TideSync.close()
        TideSync.close() // idempotent
        assertTrue(!TideSync.isInitialized)

        val reopened = TideSync.init(context, TideSyncConfig(syncServer = proxy.url))
        assertEquals(user, reopened.userName())
        assertTrue(reopened.isLoggedIn())
    }
}
