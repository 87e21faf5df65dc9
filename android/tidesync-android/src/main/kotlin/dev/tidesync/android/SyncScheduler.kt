package dev.tidesync.android

import android.content.Context
import androidx.work.BackoffPolicy
import androidx.work.Constraints
import androidx.work.ExistingPeriodicWorkPolicy
import androidx.work.ExistingWorkPolicy
import androidx.work.NetworkType
import androidx.work.OneTimeWorkRequest
import androidx.work.Operation
import androidx.work.OutOfQuotaPolicy
import androidx.work.PeriodicWorkRequest
import androidx.work.WorkManager
import dev.tidesync.Engine
import java.util.concurrent.TimeUnit

/**
 * Background sync with WorkManager: every work runs [SyncWorker], needs a connected network
 * (`NetworkType.CONNECTED`), backs off exponentially from [backoffDelayMillis] after `retry()`,
 * carries [TAG], and is *unique* under a fixed name with an explicit policy:
 *
 * | work                 | name                   | policy                                   |
 * |----------------------|------------------------|------------------------------------------|
 * | periodic             | [PERIODIC_WORK_NAME]   | `ExistingPeriodicWorkPolicy.UPDATE`      |
 * | "sync now" (one-shot)| [SYNC_NOW_WORK_NAME]   | `ExistingWorkPolicy.KEEP`                |
 * | push message         | [PUSH_WORK_NAME]       | `ExistingWorkPolicy.KEEP`, expedited     |
 *
 * UPDATE keeps a periodic work's schedule (and a running pass) and applies a changed period;
 * KEEP makes a second "sync now" while one is pending or running a no-op (one pass covers both).
 * The push work is expedited and, out of expedited quota, runs as ordinary work
 * (`OutOfQuotaPolicy.RUN_AS_NON_EXPEDITED_WORK_REQUEST`). [cancelAll] on logout.
 *
 * The period is the engine's poll interval, but never less than WorkManager's minimum of
 * 15 minutes ([MIN_PERIOD_MILLIS]): a shorter interval (the engine's default is 60 s) is raised to
 * 15 minutes; keep foreground syncing to the engine's own polling while the app is visible. A poll
 * interval of 0 (polling off) cancels the periodic work.
 */
class SyncScheduler(
    private val workManager: WorkManager,
    private val backoffDelayMillis: Long = DEFAULT_BACKOFF_MILLIS,
) {
    /** The scheduler of the app's WorkManager. */
    constructor(context: Context) : this(WorkManager.getInstance(context))

    init {
        require(backoffDelayMillis >= MIN_BACKOFF_MILLIS) {
            "backoff must be at least $MIN_BACKOFF_MILLIS ms, was $backoffDelayMillis"
        }
    }

    /** Schedules or updates the periodic sync from [engine]'s poll interval. */
    fun schedulePeriodic(engine: Engine): Operation = schedulePeriodic(engine.pollInterval().toLong())

    /**
     * Schedules or updates the periodic sync for a poll interval of [pollIntervalSeconds]
     * (period: at least 15 minutes; 0 cancels it).
     */
    fun schedulePeriodic(pollIntervalSeconds: Long): Operation {
        val period = periodMillis(pollIntervalSeconds) ?: return workManager.cancelUniqueWork(PERIODIC_WORK_NAME)
        return workManager.enqueueUniquePeriodicWork(
            PERIODIC_WORK_NAME,
            ExistingPeriodicWorkPolicy.UPDATE,
            periodicRequest(period),
        )
    }

    /** One pass as soon as the network allows; a pending or running one is kept. */
    fun syncNow(): Operation =
        workManager.enqueueUniqueWork(SYNC_NOW_WORK_NAME, ExistingWorkPolicy.KEEP, oneTimeRequest(expedited = false))

    /**
     * One expedited pass for a push message (the server has changes); a pending or running one
     * is kept. Out of expedited quota it runs as ordinary work.
     */
    fun syncForPush(): Operation =
        workManager.enqueueUniqueWork(PUSH_WORK_NAME, ExistingWorkPolicy.KEEP, oneTimeRequest(expedited = true))

    /** Cancels every sync work (periodic, sync now, push); for logout. A running pass is stopped. */
    fun cancelAll(): Operation = workManager.cancelAllWorkByTag(TAG)

    /** The periodic request for [periodMillis] (visible for tests). */
    fun periodicRequest(periodMillis: Long): PeriodicWorkRequest =
        PeriodicWorkRequest.Builder(SyncWorker::class.java, periodMillis, TimeUnit.MILLISECONDS)
            .setConstraints(networkConstraints())
            .setBackoffCriteria(BackoffPolicy.EXPONENTIAL, backoffDelayMillis, TimeUnit.MILLISECONDS)
            .addTag(TAG)
            .build()

    /** A one-shot request, expedited or not (visible for tests). */
    fun oneTimeRequest(expedited: Boolean): OneTimeWorkRequest =
        OneTimeWorkRequest.Builder(SyncWorker::class.java)
            .setConstraints(networkConstraints())
            .setBackoffCriteria(BackoffPolicy.EXPONENTIAL, backoffDelayMillis, TimeUnit.MILLISECONDS)
            .addTag(TAG)
            .apply { if (expedited) setExpedited(OutOfQuotaPolicy.RUN_AS_NON_EXPEDITED_WORK_REQUEST) }
            .build()

    companion object {
        /** Unique name of the periodic sync. */
        const val PERIODIC_WORK_NAME = "dev.tidesync.sync.periodic"

        /** Unique name of the one-shot "sync now". */
        const val SYNC_NOW_WORK_NAME = "dev.tidesync.sync.now"

        /** Unique name of the expedited one-shot for a push message. */
        const val PUSH_WORK_NAME = "dev.tidesync.sync.push"

        /** Tag of every sync work. */
        const val TAG = "dev.tidesync.sync"

        /** WorkManager's minimum period (`PeriodicWorkRequest.MIN_PERIODIC_INTERVAL_MILLIS`). */
        const val MIN_PERIOD_MILLIS: Long = 15 * 60 * 1000L

        /** First backoff delay after `retry()`; doubles each time (WorkManager caps it at 5 h). */
        const val DEFAULT_BACKOFF_MILLIS: Long = 30_000L

        /** WorkManager's minimum backoff (`WorkRequest.MIN_BACKOFF_MILLIS`). */
        const val MIN_BACKOFF_MILLIS: Long = 10_000L

        /** The period for a poll interval: null when polling is off (0), else at least 15 minutes. */
        fun periodMillis(pollIntervalSeconds: Long): Long? {
            require(pollIntervalSeconds >= 0) { "poll interval must not be negative, was $pollIntervalSeconds" }
            if (pollIntervalSeconds == 0L) return null
            return maxOf(TimeUnit.SECONDS.toMillis(pollIntervalSeconds), MIN_PERIOD_MILLIS)
        }

        private fun networkConstraints(): Constraints =
            Constraints.Builder().setRequiredNetworkType(NetworkType.CONNECTED).build()
    }
}
