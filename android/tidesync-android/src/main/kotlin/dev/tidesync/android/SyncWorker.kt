package dev.tidesync.android

import android.app.Notification
import android.app.NotificationChannel
import android.app.NotificationManager
import android.content.Context
import android.os.Build
import android.util.Log
import androidx.work.CoroutineWorker
import androidx.work.Data
import androidx.work.ForegroundInfo
import androidx.work.ListenableWorker
import androidx.work.WorkerFactory
import androidx.work.WorkerParameters
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.async
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/**
 * One bounded sync pass as a WorkManager work: runs [SyncRunner.syncOnce], reports progress with
 * `setProgress` and answers what [SyncPolicy] decides from the typed outcome (network or 5xx →
 * `retry()`, unauthorized → `failure()` with [SyncData.KEY_ERROR], success → `success()` with
 * counts; keys in [SyncData]).
 *
 * Stopping: when WorkManager stops the work (constraints lost, cancelled, quota, logout), it
 * cancels [doWork]'s coroutine (`CoroutineWorker.onStopped` is final and does nothing itself);
 * the worker then calls [SyncRunner.stop] (`Engine.stopSync`) at once and waits for the pass to
 * end, so that no sync outlives its work. The engine resumes from its checkpoint at the next run.
 *
 * Created by WorkManager's default factory with the process' engine ([TideSync.init] must have
 * run, e.g. in `Application.onCreate`); [SyncWorkerFactory] supplies another [SyncRunner].
 */
class SyncWorker(
    context: Context,
    params: WorkerParameters,
    private val runner: SyncRunner?,
    private val policy: SyncPolicy = SyncPolicy(),
) : CoroutineWorker(context, params) {

    /** The constructor WorkManager's default factory calls: the runner of [TideSync]. */
    constructor(context: Context, params: WorkerParameters) : this(context, params, TideSync.runnerOrNull())

    override suspend fun doWork(): Result {
        val runner = runner ?: return Result.failure(
            Data.Builder()
                .putString(SyncData.KEY_ERROR, SyncData.ERROR_NOT_INITIALIZED)
                .putString(SyncData.KEY_DETAIL, "TideSync.init(context, config) was not called in this process")
                .build(),
        )
        val outcome = runPass(runner)
        val decision = policy.decide(outcome, runAttemptCount)
        Log.i(TAG, "sync pass (attempt ${runAttemptCount + 1}): $outcome -> $decision")
        return decision.toResult()
    }

    /**
     * Expedited work ([SyncScheduler.syncForPush]) runs as a foreground service before Android 12,
     * which needs a notification; from Android 12 on this is not called.
     */
    override suspend fun getForegroundInfo(): ForegroundInfo =
        ForegroundInfo(NOTIFICATION_ID, foregroundNotification(applicationContext))

    private suspend fun runPass(runner: SyncRunner): SyncOutcome = coroutineScope {
        // Progress comes from the engine's notifier thread: hand it over without blocking, keep
        // only the latest, and report it from this coroutine (setProgress suspends).
        val progress = Channel<SyncProgress>(Channel.CONFLATED)
        launch {
            for (p in progress) setProgress(Data.Builder().putAll(SyncData.progress(p)).build())
        }
        val pass = async {
            try {
                runner.syncOnce { progress.trySend(it) }
            } catch (e: CancellationException) {
                throw e
            } catch (e: Exception) {
                SyncOutcome.Failed(SyncData.ERROR_INTERNAL, e.toString())
            }
        }
        try {
            pass.await()
        } catch (e: CancellationException) {
            // Stopped by WorkManager: end the pass now; coroutineScope then waits for it.
            withContext(NonCancellable) { runner.stop() }
            throw e
        } finally {
            progress.close() // the reporter sends what is left and ends (cancelled with the scope)
        }
    }

    companion object {
        private const val TAG = "TideSync"

        /** Id of the notification shown while an expedited pass runs before Android 12. */
        const val NOTIFICATION_ID = 0x7153

        /** Its channel (Android 8+), created on first use; rename it in the app's settings UI. */
        const val NOTIFICATION_CHANNEL_ID = "dev.tidesync.sync"

        private fun foregroundNotification(context: Context): Notification {
            val builder = if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.O) {
                val channel = NotificationChannel(NOTIFICATION_CHANNEL_ID, "Sync", NotificationManager.IMPORTANCE_LOW)
                context.getSystemService(NotificationManager::class.java).createNotificationChannel(channel)
                Notification.Builder(context, NOTIFICATION_CHANNEL_ID)
            } else {
                @Suppress("DEPRECATION")
                Notification.Builder(context)
            }
            return builder
                .setSmallIcon(android.R.drawable.stat_notify_sync)
                .setContentTitle("Syncing")
                .setOngoing(true)
                .build()
        }

        internal fun SyncDecision.toResult(): ListenableWorker.Result = when (this) {
            is SyncDecision.Success -> Result.success(Data.Builder().putAll(data).build())
            is SyncDecision.Retry -> Result.retry()
            is SyncDecision.Failure -> Result.failure(Data.Builder().putAll(data).build())
        }
    }
}

/**
 * A [WorkerFactory] that creates [SyncWorker]s with the [SyncRunner] from [runner] (for apps that
 * build the engine themselves, or tests); other workers are left to the next factory (return
 * null). Register it with `Configuration.Builder().setWorkerFactory(…)` or in a
 * `DelegatingWorkerFactory`.
 */
class SyncWorkerFactory(
    private val policy: SyncPolicy = SyncPolicy(),
    private val runner: () -> SyncRunner?,
) : WorkerFactory() {
    override fun createWorker(
        appContext: Context,
        workerClassName: String,
        workerParameters: WorkerParameters,
    ): ListenableWorker? =
        if (workerClassName == SyncWorker::class.java.name) {
            SyncWorker(appContext, workerParameters, runner(), policy)
        } else {
            null
        }
}
