package dev.tidesync.android

import android.content.Context
import android.util.Log
import androidx.work.BackoffPolicy
import androidx.work.Configuration
import androidx.work.NetworkType
import androidx.work.OutOfQuotaPolicy
import androidx.work.WorkInfo
import androidx.work.WorkManager
import androidx.work.testing.TestDriver
import androidx.work.testing.WorkManagerTestInitHelper
import org.junit.After
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.annotation.LooperMode
import org.robolectric.shadows.ShadowLog
import java.util.UUID
import java.util.concurrent.TimeUnit

/**
 * SyncScheduler on the real WorkManager (test initialisation, TestDriver): unique works and their
 * policies, constraints, period, backoff, runs when constraints are met, cancellation.
 */
@RunWith(RobolectricTestRunner::class)
@LooperMode(LooperMode.Mode.INSTRUMENTATION_TEST) // test thread ≠ main thread: waits never block the looper
class SyncSchedulerTest {
    private val context: Context = RuntimeEnvironment.getApplication()
    private lateinit var workManager: WorkManager
    private lateinit var driver: TestDriver
    private lateinit var scheduler: SyncScheduler

    /** The runner every SyncWorker of this WorkManager gets; a test may swap it before a run. */
    @Volatile
    private var runner: SyncRunner = FakeRunner()

    @Before
    fun setUp() {
        val config = Configuration.Builder()
            .setMinimumLoggingLevel(Log.DEBUG)
            .setWorkerFactory(SyncWorkerFactory { runner })
            .build()
        ShadowLog.stream = System.out // WorkManager's log in the surefire report of this class
        // WorkManager's own executors, as in an app: with the synchronous test executors its
        // database work would run on whichever thread completes a CoroutineWorker (one of
        // Dispatchers.Default), and the rescheduling after retry() fails there ("no current
        // transaction"). The main looper runs on its own thread (INSTRUMENTATION_TEST), so tests
        // wait for WorkInfo states or latches with deadlines.
        WorkManagerTestInitHelper.initializeTestWorkManager(
            context,
            config,
            WorkManagerTestInitHelper.ExecutorsMode.PRESERVE_EXECUTORS,
        )
        workManager = WorkManager.getInstance(context)
        driver = WorkManagerTestInitHelper.getTestDriver(context)!!
        scheduler = SyncScheduler(workManager)
    }

    @After
    fun tearDown() {
        (runner as? BlockingRunner)?.release()
        WorkManagerTestInitHelper.closeWorkDatabase()
    }

    private fun unique(name: String): List<WorkInfo> =
        workManager.getWorkInfosForUniqueWork(name).get(WAIT_MS, TimeUnit.MILLISECONDS)

    private fun onlyUnique(name: String): WorkInfo = unique(name).single()

    private fun tagged(): List<WorkInfo> =
        workManager.getWorkInfosByTag(SyncScheduler.TAG).get(WAIT_MS, TimeUnit.MILLISECONDS)

    private companion object {
        /** Interval between two pokes of TestDriver while waiting for a rescheduled work. */
        const val POKE_MS = 100L
    }

    @Test
    fun periodic_is_one_unique_work_with_network_constraint_period_and_backoff() {
        scheduler.schedulePeriodic(pollIntervalSeconds = 60).result.get()
        scheduler.schedulePeriodic(pollIntervalSeconds = 60).result.get()

        val info = onlyUnique(SyncScheduler.PERIODIC_WORK_NAME)
        assertEquals(WorkInfo.State.ENQUEUED, info.state)
        assertEquals(NetworkType.CONNECTED, info.constraints.requiredNetworkType)
        // 60 s is below WorkManager's minimum: raised to 15 minutes.
        assertEquals(TimeUnit.MINUTES.toMillis(15), info.periodicityInfo!!.repeatIntervalMillis)
        assertTrue(SyncScheduler.TAG in info.tags)

        val spec = scheduler.periodicRequest(SyncScheduler.MIN_PERIOD_MILLIS).workSpec
        assertEquals(BackoffPolicy.EXPONENTIAL, spec.backoffPolicy)
        assertEquals(SyncScheduler.DEFAULT_BACKOFF_MILLIS, spec.backoffDelayDuration)
    }

    @Test
    fun periodic_update_keeps_the_work_and_applies_a_new_period() {
        scheduler.schedulePeriodic(pollIntervalSeconds = 60).result.get()
        val first = onlyUnique(SyncScheduler.PERIODIC_WORK_NAME)

        scheduler.schedulePeriodic(pollIntervalSeconds = 3600).result.get() // ExistingPeriodicWorkPolicy.UPDATE

        val updated = onlyUnique(SyncScheduler.PERIODIC_WORK_NAME)
        assertEquals(first.id, updated.id)
        assertEquals(TimeUnit.HOURS.toMillis(1), updated.periodicityInfo!!.repeatIntervalMillis)
    }

    @Test
    fun poll_interval_zero_cancels_the_periodic_work() {
        scheduler.schedulePeriodic(pollIntervalSeconds = 60).result.get()
        scheduler.schedulePeriodic(pollIntervalSeconds = 0).result.get()
        assertEquals(WorkInfo.State.CANCELLED, onlyUnique(SyncScheduler.PERIODIC_WORK_NAME).state)
    }

    @Test
    fun periodic_work_runs_when_constraints_are_met_and_stays_scheduled() {
        val fake = FakeRunner()
        runner = fake
        scheduler.schedulePeriodic(pollIntervalSeconds = 60).result.get()
        val id = onlyUnique(SyncScheduler.PERIODIC_WORK_NAME).id
        assertEquals(0, fake.passes.get()) // no network yet: not run

        driver.setAllConstraintsMet(id)
        driver.setPeriodDelayMet(id)

        fake.awaitPass()
        // A periodic work goes back to ENQUEUED for its next period (generation unchanged).
        val after = workManager.awaitWorkInfo(id) { it.state == WorkInfo.State.ENQUEUED && it.nextScheduleTimeMillis > 0 }
        assertEquals(1, fake.passes.get())
        assertEquals(0, after.runAttemptCount)
    }

    @Test
    fun sync_now_waits_for_the_network_then_succeeds_with_counts() {
        val fake = FakeRunner()
        runner = fake
        scheduler.syncNow().result.get()
        val info = onlyUnique(SyncScheduler.SYNC_NOW_WORK_NAME)
        assertEquals(NetworkType.CONNECTED, info.constraints.requiredNetworkType)
        assertEquals(WorkInfo.State.ENQUEUED, info.state)
        assertEquals(0, fake.passes.get())

        driver.setAllConstraintsMet(info.id)

        val done = workManager.awaitState(info.id, WorkInfo.State.SUCCEEDED)
        assertEquals(300L, done.outputData.getLong(SyncData.localObjectsKey("Product"), -1))
        assertEquals(1, fake.passes.get())
    }

    @Test
    fun sync_now_twice_keeps_one_even_while_it_runs() {
        scheduler.syncNow().result.get()
        scheduler.syncNow().result.get()
        val first = onlyUnique(SyncScheduler.SYNC_NOW_WORK_NAME)

        val blocking = BlockingRunner()
        runner = blocking
        driver.setAllConstraintsMet(first.id)
        awaitLatch(blocking.entered, "sync now started")
        scheduler.syncNow().result.get() // ExistingWorkPolicy.KEEP: the running one covers it

        val infos = unique(SyncScheduler.SYNC_NOW_WORK_NAME)
        assertEquals(listOf(first.id), infos.map { it.id })
        assertEquals(WorkInfo.State.RUNNING, infos.single().state)
    }

    @Test
    fun network_failure_is_retried_with_backoff_and_unauthorized_fails() {
        runner = FakeRunner(SyncOutcome.Network("connection refused"))
        scheduler.syncNow().result.get()
        val id = onlyUnique(SyncScheduler.SYNC_NOW_WORK_NAME).id
        driver.setAllConstraintsMet(id)
        val retried = workManager.awaitWorkInfo(id) { it.state == WorkInfo.State.ENQUEUED && it.runAttemptCount == 1 }
        assertTrue("next run after the backoff", retried.nextScheduleTimeMillis > System.currentTimeMillis())

        val unauthorized = FakeRunner(SyncOutcome.Unauthorized("session expired"))
        runner = unauthorized
        // The backoff has passed and the network is there. TestDriver only counts this once
        // WorkManager has rescheduled the retried work, which happens on its own thread after
        // the WorkInfo above and has no observable signal: repeat it until the pass starts.
        val deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(WAIT_MS)
        while (unauthorized.passStarted.poll(POKE_MS, TimeUnit.MILLISECONDS) == null) {
            assertTrue("retried work never ran again", System.nanoTime() < deadline)
            driver.setAllConstraintsMet(id)
            driver.setInitialDelayMet(id)
        }
        val failed = workManager.awaitState(id, WorkInfo.State.FAILED)
        assertEquals(SyncData.ERROR_UNAUTHORIZED, failed.outputData.getString(SyncData.KEY_ERROR))
    }

    @Test
    fun push_is_expedited_unique_and_falls_back_when_out_of_quota() {
        val spec = scheduler.oneTimeRequest(expedited = true).workSpec
        assertTrue(spec.expedited)
        assertEquals(OutOfQuotaPolicy.RUN_AS_NON_EXPEDITED_WORK_REQUEST, spec.outOfQuotaPolicy)
        assertFalse(scheduler.oneTimeRequest(expedited = false).workSpec.expedited)

        val fake = FakeRunner()
        runner = fake
        scheduler.syncForPush().result.get()
        scheduler.syncForPush().result.get()
        val info = onlyUnique(SyncScheduler.PUSH_WORK_NAME)
        assertEquals(NetworkType.CONNECTED, info.constraints.requiredNetworkType)
        driver.setAllConstraintsMet(info.id)
        workManager.awaitState(info.id, WorkInfo.State.SUCCEEDED)
        assertEquals(1, fake.passes.get())
    }

    @Test
    fun logout_cancels_every_sync_work_and_stops_the_running_pass() {
        scheduler.schedulePeriodic(pollIntervalSeconds = 60).result.get()
        scheduler.syncForPush().result.get()
        scheduler.syncNow().result.get()
        val blocking = BlockingRunner()
        runner = blocking
        val running = onlyUnique(SyncScheduler.SYNC_NOW_WORK_NAME).id
        driver.setAllConstraintsMet(running)
        awaitLatch(blocking.entered, "sync now started")

        scheduler.cancelAll().result.get()

        awaitLatch(blocking.returned, "running pass stopped by the cancellation")
        assertEquals(1, blocking.stops.get())
        val ids: List<UUID> = tagged().map { it.id }
        assertEquals(3, ids.size)
        for (id in ids) workManager.awaitState(id, WorkInfo.State.CANCELLED)
    }

    @Test
    fun losing_the_network_stops_the_running_pass() {
        val blocking = BlockingRunner()
        runner = blocking
        scheduler.syncNow().result.get()
        val id = onlyUnique(SyncScheduler.SYNC_NOW_WORK_NAME).id
        driver.setAllConstraintsMet(id)
        awaitLatch(blocking.entered, "sync now started")

        driver.stopRunningWorkWithReason(id, WorkInfo.STOP_REASON_CONSTRAINT_CONNECTIVITY)

        awaitLatch(blocking.returned, "running pass stopped")
        assertEquals(1, blocking.stops.get())
        // Stopped, not failed: WorkManager runs it again when the network is back.
        workManager.awaitState(id, WorkInfo.State.ENQUEUED)
    }
}
