package dev.tidesync.android

import dev.tidesync.Engine
import dev.tidesync.SyncNotification
import dev.tidesync.SyncStatus
import dev.tidesync.TideSyncException
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.emptyFlow
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import kotlin.time.Duration
import kotlin.time.Duration.Companion.minutes

/**
 * What [SyncWorker] needs from the engine: one bounded pass and a way to stop it. The real one is
 * [EngineSyncRunner]; tests substitute their own.
 */
interface SyncRunner {
    /**
     * Runs one sync pass and returns how it ended; never throws for a sync failure. May block a
     * thread of its own while the pass runs: a caller that is cancelled calls [stop] and then
     * waits for this to return. [onProgress] may be called from any thread and must not block.
     */
    suspend fun syncOnce(onProgress: (SyncProgress) -> Unit = {}): SyncOutcome

    /** Asks a running pass to end soon (it returns [SyncOutcome.Stopped]); any thread; no-op when idle. */
    fun stop()
}

/**
 * [SyncRunner] over the generated [Engine]: `syncAll()` on [Dispatchers.IO], progress from the
 * engine's notifications ([notifications]: [TideSync.notifications], the process' one `*`
 * listener), bounded by [maxDuration] (then `stopSync`), so that a pass ends within WorkManager's
 * 10-minute execution window. A request in flight is bounded by the engine's read timeout.
 */
class EngineSyncRunner(
    private val engine: Engine,
    private val notifications: Flow<SyncNotification> = emptyFlow(),
    private val maxDuration: Duration = DEFAULT_MAX_DURATION,
) : SyncRunner {
    override suspend fun syncOnce(onProgress: (SyncProgress) -> Unit): SyncOutcome = coroutineScope {
        val progress = launch(start = CoroutineStart.UNDISPATCHED) {
            notifications.collect { n -> n.toProgress()?.let(onProgress) }
        }
        val watchdog = launch {
            delay(maxDuration)
            stop()
        }
        try {
            withContext(Dispatchers.IO) {
                try {
                    SyncOutcomes.fromResults(engine.syncAll())
                } catch (e: TideSyncException) {
                    SyncOutcomes.fromException(e)
                }
            }
        } finally {
            watchdog.cancel()
            progress.cancel()
        }
    }

    override fun stop() {
        // Does not wait: the pass in syncOnce ends at the engine's next check and returns.
        try {
            engine.stopSync(0u)
        } catch (_: TideSyncException) {
            // Closed: nothing runs any more.
        }
    }

    companion object {
        /** Below WorkManager's 10-minute limit for one run of a worker. */
        val DEFAULT_MAX_DURATION: Duration = 9.minutes

        private fun SyncNotification.toProgress(): SyncProgress? {
            val source = sourceName ?: return null
            if (status != SyncStatus.IN_PROGRESS) return null
            return SyncProgress(source, cumulativeCount.toLong(), totalCount?.toLong())
        }
    }
}
