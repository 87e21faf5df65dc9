package dev.tidesync.android

import android.content.Context
import android.util.Log
import androidx.test.core.app.ApplicationProvider
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import androidx.work.Configuration
import androidx.work.WorkInfo
import androidx.work.WorkManager
import androidx.work.testing.WorkManagerTestInitHelper
import dev.tidesync.Partition
import dev.tidesync.SourceDefinition
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.After
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import java.io.File
import java.util.UUID
import java.util.concurrent.TimeUnit

/**
 * The whole stack as an app runs it: TideSync.init from the app Context, WorkManager's default
 * worker factory creating SyncWorker, the scheduler's "sync now", the native engine and the
 * reference server. On an emulator (.github/workflows/android.yml: connectedDebugAndroidTest,
 * the server on the runner's loopback reached through `adb reverse`, its URL in the
 * instrumentation argument `syncUrl`); on the host JVM under Robolectric (scripts/test-android.sh:
 * AndroidJUnit4 delegates to Robolectric, the URL in the system property `tidesync.syncUrl`).
 */
@RunWith(AndroidJUnit4::class)
class TideSyncInstrumentedTest {
    private val context: Context = ApplicationProvider.getApplicationContext()

    private val syncUrl: String = InstrumentationRegistry.getArguments().getString("syncUrl")
        ?: System.getProperty("tidesync.syncUrl").orEmpty()

    @Before
    fun setUp() {
        assumeTrue("no sync server: pass -e syncUrl (device) or -Dtidesync.syncUrl (host)", syncUrl.isNotEmpty())
        TideSync.close()
        WorkManagerTestInitHelper.initializeTestWorkManager(
            context,
            Configuration.Builder().setMinimumLoggingLevel(Log.DEBUG).build(), // default factory
        )
        TideSync.init(
            context,
            TideSyncConfig(
                syncServer = syncUrl,
                sources = listOf(
                    SourceDefinition("Product", Partition.APP, priority = 1),
                    SourceDefinition("Customer", Partition.USER, priority = 2),
                ),
                pollIntervalSeconds = 0u,
            ),
        )
    }

    @After
    fun tearDown() {
        TideSync.close()
        WorkManagerTestInitHelper.closeWorkDatabase()
    }

    @Test
    fun sync_now_through_workmanager_syncs_the_transcripts_app() {
        TideSync.engine.login("i-" + UUID.randomUUID(), "password")
        val workManager = WorkManager.getInstance(context)
        SyncScheduler(workManager).syncNow().result.get(WAIT_S, TimeUnit.SECONDS)
        val id = workManager.getWorkInfosForUniqueWork(SyncScheduler.SYNC_NOW_WORK_NAME)
            .get(WAIT_S, TimeUnit.SECONDS).single().id

        WorkManagerTestInitHelper.getTestDriver(context)!!.setAllConstraintsMet(id)

        val info = awaitFinished(workManager, id)
        assertEquals(WorkInfo.State.SUCCEEDED, info.state)
        assertEquals(300L, info.outputData.getLong(SyncData.localObjectsKey("Product"), -1))
        assertEquals(120L, info.outputData.getLong(SyncData.localObjectsKey("Customer"), -1))
        assertTrue(File(context.noBackupFilesDir, "tidesync/tidesync.db").isFile)
    }

    /** Waits (deadline, no sleep) for the work to finish, observing its WorkInfo. */
    private fun awaitFinished(workManager: WorkManager, id: UUID): WorkInfo = runBlocking {
        withTimeout(TimeUnit.SECONDS.toMillis(WAIT_S)) {
            workManager.getWorkInfoByIdFlow(id).first { it != null && it.state.isFinished }!!
        }
    }

    private companion object {
        const val WAIT_S = 60L
    }
}
