package dev.tidesync.android

import android.content.Context
import dev.tidesync.Engine
import dev.tidesync.EngineConfig
import dev.tidesync.LogLevel
import dev.tidesync.NotificationHandle
import dev.tidesync.SourceDefinition
import dev.tidesync.SyncListener
import dev.tidesync.SyncNotification
import dev.tidesync.initLogging
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.BufferOverflow
import kotlinx.coroutines.flow.MutableSharedFlow
import kotlinx.coroutines.flow.SharedFlow
import kotlinx.coroutines.flow.asSharedFlow
import kotlinx.coroutines.withContext
import java.io.File

/** How [TideSync.init] opens the engine. */
data class TideSyncConfig(
    /** The RhoConnect sync server, e.g. `https://host/application/`. */
    val syncServer: String,
    /** Sources declared at every init (`Engine.defineSource` is idempotent). */
    val sources: List<SourceDefinition> = emptyList(),
    /** File name of the database in `noBackupFilesDir/tidesync/`. */
    val databaseName: String = "tidesync.db",
    /** Objects per page (engine default: 2000). */
    val pageSize: UInt? = null,
    /** Seconds between the engine's own polls while the process runs; 0 turns them off. */
    val pollIntervalSeconds: UInt? = null,
    /** Response timeout; it bounds how long a stop waits for a stalled request (default 60 s). */
    val readTimeoutMs: UInt? = null,
    /** Level of the Rust log (Logcat through `android_logger` on a device, stderr elsewhere). */
    val logLevel: LogLevel = LogLevel.INFO,
)

/**
 * The process' one TideSync engine: [init] opens it from the app `Context` (database in
 * `noBackupFilesDir`, not backed up: a restored copy would reuse the client id), [engine] hands
 * it out, [close] ends it. Call [init] in `Application.onCreate` so that a process started by
 * WorkManager for a [SyncWorker] has the engine too.
 *
 * [notifications] is the engine's `*` listener, registered once here and shared: collect it
 * instead of registering another `*` listener (`Engine.notifications()`), which would replace
 * this one (the engine keeps one listener per target) and leave [SyncWorker] without progress.
 */
object TideSync {
    private val lock = Any()

    @Volatile
    private var opened: Opened? = null

    private class Opened(val engine: Engine, val handle: NotificationHandle, val databasePath: String)

    private val sharedNotifications = MutableSharedFlow<SyncNotification>(
        extraBufferCapacity = NOTIFICATION_BUFFER,
        onBufferOverflow = BufferOverflow.DROP_OLDEST,
    )

    /**
     * Every notification of the `*` listener (run events, and the events of sources without a
     * listener of their own), for as long as the engine is open. Hot: collect before starting a
     * sync. A collector that falls more than 256 events behind loses the oldest ones.
     */
    val notifications: SharedFlow<SyncNotification> = sharedNotifications.asSharedFlow()

    /**
     * Opens the engine once per process and returns it; later calls return the same engine and
     * ignore [config]. Blocking (opens or migrates the database): call it early, or off the main
     * thread with [initAsync]. Also installs the Rust logger (`initLogging`: `android_logger`
     * on Android) and declares [TideSyncConfig.sources].
     *
     * @throws dev.tidesync.TideSyncException `Storage` (cannot open the database),
     *   `InvalidArgument` (bad server URL or page size).
     */
    fun init(context: Context, config: TideSyncConfig): Engine {
        opened?.let { return it.engine }
        synchronized(lock) {
            opened?.let { return it.engine }
            initLogging(config.logLevel, null)
            val dir = File(context.applicationContext.noBackupFilesDir, DIRECTORY)
            check(dir.isDirectory || dir.mkdirs()) { "cannot create $dir" }
            val dbPath = File(dir, config.databaseName).path
            val engine = Engine.open(
                EngineConfig(
                    dbPath = dbPath,
                    syncServer = config.syncServer,
                    pageSize = config.pageSize,
                    pollInterval = config.pollIntervalSeconds,
                    filesDir = File(dir, "files").path,
                    readTimeoutMs = config.readTimeoutMs,
                ),
            )
            try {
                config.sources.forEach(engine::defineSource)
                val handle = engine.setNotification(null, object : SyncListener {
                    override fun onNotification(notification: SyncNotification) {
                        sharedNotifications.tryEmit(notification) // never blocks the notifier thread
                    }
                })
                opened = Opened(engine, handle, dbPath)
            } catch (e: Exception) {
                engine.shutdown()
                engine.close()
                throw e
            }
            return engine
        }
    }

    /** [init] on [Dispatchers.IO]. */
    suspend fun initAsync(context: Context, config: TideSyncConfig): Engine =
        withContext(Dispatchers.IO) { init(context, config) }

    /** True between [init] and [close]. */
    val isInitialized: Boolean get() = opened != null

    /** The engine; throws [IllegalStateException] before [init]. */
    val engine: Engine
        get() = opened?.engine ?: throw IllegalStateException("TideSync.init(context, config) was not called")

    /** Where [init] put the database (null before [init]). */
    val databasePath: String? get() = opened?.databasePath

    /** A [SyncRunner] over the engine, with progress from [notifications]; null before [init]. */
    fun runnerOrNull(): SyncRunner? = opened?.let { EngineSyncRunner(it.engine, notifications) }

    /**
     * Logs out: cancels every scheduled sync ([SyncScheduler.cancelAll]), then signs out of the
     * engine (which stops a running sync); [wipe] also removes the local data.
     */
    suspend fun logout(scheduler: SyncScheduler, wipe: Boolean = false) {
        scheduler.cancelAll()
        withContext(Dispatchers.IO) { engine.logout(wipe) }
    }

    /**
     * Removes the listener, shuts the engine down (stopping a running sync) and frees it. A later
     * [init] opens it again. Idempotent. Blocking: up to the engine's stop time.
     */
    fun close() {
        synchronized(lock) {
            val o = opened ?: return
            opened = null
            try {
                o.handle.cancel()
                o.handle.close()
            } finally {
                o.engine.shutdown()
                o.engine.close()
            }
        }
    }

    private const val DIRECTORY = "tidesync"
    private const val NOTIFICATION_BUFFER = 256
}
