package dev.tidesync

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.api.io.TempDir
import java.nio.file.Path

/** Bulk sync through the bindings: the settings, the BULK notifications, the data. */
@Timeout(120)
class BulkTest {
    @TempDir
    lateinit var dir: Path

    @Test
    fun aBulkSourceIsLoadedFromTheBulkFileThenTheStateIsDone() = withEngine(dir) { e ->
        assertEquals(SyncType.INCREMENTAL, e.sourceSyncType("Product"))
        e.setSourceSyncType("Product", SyncType.BULK)
        assertEquals(SyncType.BULK, e.sourceSyncType("Product"))
        assertEquals(BulkSyncState.NEEDED, e.bulkSyncState())
        assertThrows(TideSyncException.InvalidArgument::class.java) { e.setSourceSyncType("Nope", SyncType.BULK) }
        e.login(newUser(), "password")
        val rec = Recorder()
        e.setNotification(null, rec).use { handle ->
            e.doSync()
            val got = rec.until(WAIT_MS) { it.sourceName == null && it.isFinal }.map { it.n }
            val bulk = got.filter { it.syncType == SyncType.BULK }
            val steps = bulk.map { "${it.bulkStatus}/${it.partition}" }.distinct()
            assertEquals(listOf("start/", "start/app", "download/app", "change_db/app", "ok/app", "complete/"), steps)
            assertEquals(300uL, bulk.last { it.bulkStatus == "ok" }.cumulativeCount)
            assertEquals(SyncStatus.OK, bulk.last().status)
            assertEquals(SyncStatus.COMPLETE, got.last().status)
            assertTrue(got.last().outcomes.all { it.status == SyncStatus.OK }, got.last().outcomes.toString())
            handle.cancel()
        }
        assertEquals(BulkSyncState.DONE, e.bulkSyncState())
        assertEquals(300uL, e.count("Product", FindQuery()))
        e.setBulkSyncState(BulkSyncState.NEEDED)
        assertEquals(BulkSyncState.NEEDED, e.bulkSyncState())
    }
}
