package dev.tidesync

import dev.tidesync.ktx.countAsync
import dev.tidesync.ktx.createObjectsAsync
import dev.tidesync.ktx.findAllAsync
import dev.tidesync.ktx.loginAsync
import dev.tidesync.ktx.notifications
import dev.tidesync.ktx.searchAsync
import dev.tidesync.ktx.syncAllAsync
import dev.tidesync.ktx.syncFlow
import dev.tidesync.ktx.syncSourceFlow
import dev.tidesync.ktx.withSyncLock
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.api.io.TempDir
import java.nio.file.Path
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger

/** The Engine through the generated bindings, against the reference server (transcripts app). */
@Timeout(120)
class EngineTest {
    @TempDir
    lateinit var dir: Path

    @Test
    fun loginSucceedsWithTheRightPasswordAndThrowsUnauthorizedWithTheWrongOne() = withEngine(dir) { e ->
        val user = newUser()
        val err = assertThrows(TideSyncException.Unauthorized::class.java) { e.login(user, "wrong") }
        assertTrue(err.detail.contains("Unable to authenticate"), err.detail)
        assertTrue(err.message.contains("detail="), "uniffi's field dump: ${err.message}")
        assertFalse(e.isLoggedIn())
        runBlocking { e.loginAsync(user, "password") }
        assertTrue(e.isLoggedIn())
        assertEquals(user, e.userName())
        e.logout(false)
        assertFalse(e.isLoggedIn())
    }

    @Test
    fun aFullSyncHasTheExactCounts() = withEngine(dir) { e ->
        runBlocking {
            e.loginAsync(newUser(), "password")
            val results = e.syncAllAsync()
            assertEquals(listOf("Product", "Customer"), results.map { it.name })
            assertTrue(results.all { it.ok && it.errorCode == ErrorCode.NONE }, results.toString())
            assertEquals(listOf(300uL, 120uL), results.map { it.localObjects })
            assertEquals(listOf(300uL, 120uL), results.map { it.objectsApplied })
            assertEquals(300uL, e.countAsync("Product"))
            assertEquals(120, e.findAllAsync("Customer").size)
            val apples = e.findAllAsync(
                "Product",
                FindQuery(conditions = listOf(Condition.Eq("brand", "Apple")), orderBy = listOf("name"), limit = 5uL),
            )
            assertEquals(5, apples.size)
            assertTrue(apples.all { it.attrs["brand"] == "Apple" })
            assertEquals(apples.map { it.attrs["name"] }.sortedBy { it }, apples.map { it.attrs["name"] })
        }
    }

    @Test
    fun notificationsArriveOffTheCallingThreadPageByPageThenFinalsThenComplete() = withEngine(dir, 50u) { e ->
        e.login(newUser(), "password")
        val rec = Recorder()
        e.setNotification(null, rec).use { handle ->
            assertNull(handle.source())
            val caller = Thread.currentThread()
            e.doSync() // returns at once
            val got = rec.untilRunEnd()
            println("notification threads: ${got.map { it.threadName }.distinct()} (caller ${caller.name})")
            assertTrue(got.none { it.thread === caller || it.threadName == caller.name })
            val ns = got.map { it.n }
            val product = ns.filter { it.sourceName == "Product" }
            val customer = ns.filter { it.sourceName == "Customer" }
            assertEquals((1..6).map { it.toULong() * 50uL } + 300uL, product.map { it.cumulativeCount })
            assertEquals(List(6) { SyncStatus.IN_PROGRESS } + SyncStatus.OK, product.map { it.status })
            assertTrue(product.dropLast(1).all { it.processedCount == 50uL && !it.isFinal && it.totalCount == 300uL })
            assertTrue(product.last().isFinal && product.last().processedCount == 0uL)
            assertEquals(listOf(50uL, 100uL, 120uL, 120uL), customer.map { it.cumulativeCount })
            assertEquals(List(3) { SyncStatus.IN_PROGRESS } + SyncStatus.OK, customer.map { it.status })
            assertEquals(product + customer + ns.last(), ns, "in sync order, nothing else")
            val run = ns.last()
            assertEquals(SyncStatus.COMPLETE, run.status)
            assertTrue(run.isFinal)
            assertEquals(listOf("Product", "Customer"), run.outcomes.map { it.sourceName })
            assertTrue(run.outcomes.all { it.status == SyncStatus.OK && it.errorCode == ErrorCode.NONE })
            assertTrue(ns.all { it.errorCode == ErrorCode.NONE && it.serverErrors.isEmpty() })
            handle.cancel()
        }
    }

    @Test
    fun aSyncIsAFlowOfNotificationsUntilComplete() = withEngine(dir, 100u) { e ->
        e.login(newUser(), "password")
        runBlocking {
            val all = withTimeout(WAIT_MS) { e.syncFlow().toList() }
            assertEquals(SyncStatus.COMPLETE, all.last().status)
            assertEquals(
                listOf("Product IN_PROGRESS 100/300", "Product IN_PROGRESS 200/300", "Product IN_PROGRESS 300/300"),
                all.take(3).map { it.brief() },
            )
            assertEquals(3 + 1 + 2 + 1 + 1, all.size, all.map { it.brief() }.toString())
            // A per-source Flow completes after its source's final event.
            val product = withTimeout(WAIT_MS) { e.syncSourceFlow("Product").toList() }
            assertEquals(listOf("Product OK final 0/300"), product.map { it.brief() })
            // The plain Flow: cancelled by `first`, which cancels and closes the handle.
            val again = withTimeout(WAIT_MS) {
                e.syncFlow().first { it.sourceName == "Customer" && it.isFinal }
            }
            assertEquals(SyncStatus.OK, again.status)
            // Let that run's COMPLETE reach nobody before the next listener registers.
            assertTrue(e.waitIdle(WAIT_MS.toUInt()) && e.flushNotifications(WAIT_MS.toUInt()))
            // notifications(source): registered, then a sync; Customer's events go to its Flow,
            // which completes after Customer's final event; the others go to `*`.
            val star = Recorder()
            e.setNotification(null, star)
            val registered = CompletableDeferred<Unit>()
            val customer = async(Dispatchers.IO) {
                e.notifications("Customer", onRegistered = { registered.complete(Unit) }).toList()
            }
            withTimeout(WAIT_MS) { registered.await() }
            e.doSync()
            val customerEvents = withTimeout(WAIT_MS) { customer.await() }
            assertEquals(listOf("Customer OK final 0/120"), customerEvents.map { it.brief() })
            assertEquals(listOf("Product OK final 0/300", "* COMPLETE final 0/-"), star.untilRunEnd().map { it.n.brief() })
        }
    }

    @Test
    fun aLocalCreateGetsItsServerIdAndTheObjectNotificationSaysSo() = withEngine(dir) { e ->
        e.login(newUser(), "password")
        e.syncAll()
        val created = e.create("Customer", mapOf("first" to "Ada", "last" to "Lovelace"))
        assertTrue(created.id.startsWith("tmp-"), created.id)
        val objects = LinkedBlockingQueue<ObjectNotification>()
        e.setObjectNotify(object : ObjectListener {
            override fun onObjects(notification: ObjectNotification) {
                objects.put(notification)
            }
        })
        e.addObjectNotify("Customer", listOf(created.id))
        val r = e.syncSource("Customer")
        assertTrue(r.ok && r.pushed == 1uL, r.toString())
        val n = objects.poll(WAIT_MS, TimeUnit.MILLISECONDS) ?: error("no object notification")
        assertEquals("Customer", n.sourceName)
        assertEquals(1, n.created.size)
        assertEquals(created.id, n.created[0].tempId)
        val serverId = n.created[0].id
        assertFalse(serverId.startsWith("tmp-"), serverId)
        assertNull(e.find("Customer", created.id))
        assertEquals("Ada", e.find("Customer", serverId)?.attrs?.get("first"))
        assertEquals(121uL, e.count("Customer", FindQuery()))
        e.clearObjectNotify()
    }

    @Test
    fun aRefusedCreateIsANonFinalErrorWithServerErrorsAndIsResolvedWithDelete() = withEngine(dir) { e ->
        e.login(newUser(), "password")
        e.syncAll()
        val bad = e.create("Product", mapOf("name" to "error", "brand" to "Acme"))
        val rec = Recorder()
        e.setNotification("Product", rec).use { handle ->
            assertEquals("Product", handle.source())
            val r = e.syncSource("Product")
            assertTrue(r.ok, "a refusal does not fail the sync: $r")
        }
        val ns = rec.until { it.isFinal }.map { it.n }
        assertEquals(listOf(SyncStatus.ERROR, SyncStatus.OK), ns.map { it.status }, ns.map { it.brief() }.toString())
        val err = ns[0]
        assertFalse(err.isFinal)
        assertEquals(ErrorCode.CUSTOM_SYNC_SERVER, err.errorCode)
        assertEquals(8u, rhoErrorCode(err.errorCode))
        assertEquals(1, err.serverErrors.size)
        assertEquals("create", err.serverErrors[0].kind)
        assertEquals(bad.id, err.serverErrors[0].objectId)
        assertEquals("Product name 'error' is not allowed", err.serverErrors[0].detail)
        assertEquals("error", err.serverErrors[0].attrs["name"])
        assertEquals(err.serverErrors, e.serverErrors("Product"))
        e.onSyncCreateError("Product", listOf(bad.id), CreateErrorAction.DELETE)
        assertNull(e.find("Product", bad.id))
        assertTrue(e.serverErrors("Product").isEmpty())
        val again = assertThrows(TideSyncException.NotFound::class.java) {
            e.onSyncCreateError("Product", listOf(bad.id), CreateErrorAction.DELETE)
        }
        assertTrue(again.what.contains(bad.id), again.what)
    }

    @Test
    fun stopSyncEndsARunningSyncAndTheEngineSyncsAgainAfterwards() = withEngine(dir, 10u) { e ->
        e.login(newUser(), "password")
        val rec = Recorder()
        e.setNotification(null, rec)
        e.doSync()
        val first = rec.until { it.status == SyncStatus.IN_PROGRESS }.last().n
        assertEquals("Product", first.sourceName)
        // Park the worker at its next page boundary, so that the stop lands mid-sync.
        e.syncLock().use { lock ->
            assertTrue(e.stopSync(10_000u), "the sync ended")
            lock.release()
        }
        val ns = rec.untilRunEnd().map { it.n }
        val run = ns.last()
        println("stopSync: run ended ${run.status} after ${ns.size} events")
        assertTrue(run.status == SyncStatus.CANCELLED || run.status == SyncStatus.COMPLETE, run.brief())
        if (run.status == SyncStatus.CANCELLED) {
            assertTrue(ns.any { it.isFinal && it.status == SyncStatus.CANCELLED && it.sourceName != null })
        }
        assertTrue(e.waitIdle(WAIT_MS.toUInt()))
        assertEquals(EngineState.IDLE, e.state())
        val results = e.syncAll()
        assertEquals(listOf(300uL, 120uL), results.map { it.localObjects }, results.toString())
        assertEquals(SyncStatus.COMPLETE, rec.untilRunEnd().last().n.status)
    }

    @Test
    fun aHeldSyncLockKeepsTheSyncFromStartingUntilReleased() = withEngine(dir) { e ->
        e.login(newUser(), "password")
        val rec = Recorder()
        e.setNotification(null, rec)
        val lock = e.syncLock()
        assertTrue(lock.isHeld() && e.isSyncMutexLocked())
        e.doSync()
        // A negative wait, bounded: nothing may arrive while the lock is held.
        assertNull(rec.poll(300), "no notification while the sync mutex is held")
        // Waiting for a blocking sync on the thread holding the lock is refused, not a deadlock.
        val refused = assertThrows(TideSyncException.InvalidArgument::class.java) { e.syncSource("Product") }
        assertTrue(refused.reason.contains("sync mutex"), refused.reason)
        lock.release()
        assertFalse(lock.isHeld())
        lock.release() // idempotent
        lock.close()
        assertEquals(SyncStatus.COMPLETE, rec.untilRunEnd().last().n.status)
        // The RhoConnect pair, and withSyncLock.
        e.lockSyncMutex()
        assertTrue(e.isSyncMutexLocked())
        e.unlockSyncMutex()
        assertFalse(e.isSyncMutexLocked())
        assertThrows(TideSyncException.InvalidArgument::class.java) { e.unlockSyncMutex() }
        val inside = runBlocking { e.withSyncLock { e.isSyncMutexLocked() } }
        assertTrue(inside)
        assertFalse(e.isSyncMutexLocked())
    }

    @Test
    fun aListenerThatThrowsDoesNotBreakTheEngine() = withEngine(dir) { e ->
        e.login(newUser(), "password")
        val logged = LinkedBlockingQueue<String>()
        initLogging(LogLevel.WARN, object : LogSink {
            override fun log(level: LogLevel, target: String, line: String) {
                logged.put("$level $line")
            }
        })
        val calls = AtomicInteger()
        e.setNotification(null, object : SyncListener {
            override fun onNotification(notification: SyncNotification) {
                calls.incrementAndGet()
                if (notification.sourceName == "Product") throw ListenerException.Failed("reported")
                throw IllegalStateException("boom")
            }
        })
        val results = e.syncAll() // returns after the run's notifications were delivered
        assertTrue(results.all { it.ok }, results.toString())
        assertTrue(calls.get() >= 3, "the listener was called: ${calls.get()}")
        initLogging(LogLevel.WARN, null)
        val lines = logged.toList()
        println("logged: ${lines.take(2)}")
        assertTrue(lines.any { it.startsWith("WARN") && it.contains("sync listener: listener failed: reported") }, lines.toString())
        assertTrue(lines.any { it.contains("listener failed: threw java.lang.IllegalStateException: boom") }, lines.toString())
        val rec = Recorder()
        e.setNotification(null, rec)
        e.doSync()
        assertEquals(SyncStatus.COMPLETE, rec.untilRunEnd().last().n.status)
        e.clearNotification(null)
    }

    @Test
    fun errorsAreKotlinExceptionsWithTheirFields() = withEngine(dir) { e ->
        val unknown = assertThrows(TideSyncException.InvalidArgument::class.java) {
            e.create("NoSuchSource", mapOf("a" to "b"))
        }
        assertTrue(unknown.reason.contains("unknown source"), unknown.reason)
        assertTrue(unknown.message.startsWith("reason="), unknown.message)
        assertThrows(TideSyncException.InvalidArgument::class.java) { e.setPageSize(0u) }
        assertThrows(TideSyncException.InvalidArgument::class.java) { e.setSyncServer("ftp://example.com/") }
        // Not logged in: a sync reports per source instead of throwing.
        val results = e.syncAll()
        assertTrue(results.none { it.ok })
        // (The run's notifications say CLIENT_NOT_LOGGED_IN; the core's report carries
        // Unauthorized("not logged in") for now.)
        val notLoggedIn = setOf(ErrorCode.CLIENT_NOT_LOGGED_IN, ErrorCode.UNAUTHORIZED)
        assertTrue(results.all { it.errorCode in notLoggedIn && it.errorMessage != null }, results.toString())
        assertEquals(7u, rhoErrorCode(ErrorCode.CLIENT_NOT_LOGGED_IN))
        // A fresh database without a server URL cannot open.
        val noServer = assertThrows(TideSyncException.InvalidArgument::class.java) {
            Engine.open(EngineConfig(dbPath = dir.resolve("other.db").toString()))
        }
        assertTrue(noServer.reason.contains("sync server"), noServer.reason)
        // A server that does not answer is Network.
        val nowhere = Engine.open(
            EngineConfig(dbPath = dir.resolve("nowhere.db").toString(), syncServer = "http://127.0.0.1:9/application/"),
        )
        nowhere.use {
            val net = assertThrows(TideSyncException.Network::class.java) { it.login("a", "b") }
            assertTrue(net.reason.isNotEmpty())
            it.shutdown()
        }
    }

    @Test
    fun closedObjectsThrowOrAreInert() {
        val e = openEngine(dir)
        val handle = e.setNotification(null, Recorder())
        e.syncLock().use { assertTrue(it.isHeld()) } // released on close
        assertFalse(e.isSyncMutexLocked())
        e.shutdown()
        e.shutdown() // idempotent
        assertEquals(EngineState.CLOSED, e.state())
        assertThrows(TideSyncException.Closed::class.java) { e.isLoggedIn() }
        assertThrows(TideSyncException.Closed::class.java) { e.doSync() }
        assertThrows(TideSyncException.Closed::class.java) { e.find("Product", "1") }
        handle.cancel() // inert once the engine is gone
        handle.close()
        assertThrows(IllegalStateException::class.java) { handle.cancel() }
        e.close()
        assertThrows(IllegalStateException::class.java) { e.isLoggedIn() }
        // A fresh engine on the same file works: the database was released.
        withEngine(dir) { again -> assertEquals(0uL, again.count("Product", FindQuery())) }
    }

    @Test
    fun searchReturnsPerSourceCountsAndStoresWhatItFound() = withEngine(dir, 50u) { e ->
        runBlocking {
            e.loginAsync(newUser(), "password")
            val found = e.searchAsync(listOf("Product"), mapOf("name" to "Product 2"))
            assertEquals(listOf(SearchResult("Product", 111uL, null)), found)
            assertEquals(111uL, e.countAsync("Product"))
        }
    }

    @Test
    fun settingsAreStoredAndComeBackAtTheNextOpen() {
        withEngine(dir, 50u) { e ->
            assertEquals(50u, e.pageSize())
            assertEquals(50u, e.setPageSize(75u))
            assertEquals(0u, e.setPollInterval(0u))
            assertEquals(true, e.setSslVerifyPeer(false))
            assertEquals(syncUrl, e.syncServer())
            assertEquals(dir.resolve("files").toString(), e.filesDir())
            assertTrue(dir.resolve("files").toFile().isDirectory)
        }
        Engine.open(EngineConfig(dbPath = dir.resolve("c.db").toString())).use { e ->
            assertEquals(75u, e.pageSize())
            assertEquals(0u, e.pollInterval())
            assertFalse(e.sslVerifyPeer())
            assertEquals(syncUrl, e.syncServer())
            e.shutdown()
        }
    }

    @Test
    fun localDataInBatchesLogoutWipeAndClientReset() = withEngine(dir) { e ->
        runBlocking {
            val made = e.createObjectsAsync("Customer", (1..100).map { mapOf("first" to "n$it", "n" to "%03d".format(it)) })
            assertEquals(100, made.size)
            val updated = e.updateObjects("Customer", made.take(10).map { ObjectUpdate(it.id, mapOf("last" to "x")) })
            assertTrue(updated.all { it.attrs["last"] == "x" })
            assertEquals(10uL, e.count("Customer", FindQuery(conditions = listOf(Condition.Eq("last", "x")))))
            val page = e.findAll("Customer", FindQuery(orderBy = listOf("n"), descending = true, limit = 3uL, offset = 1uL))
            assertEquals(listOf("099", "098", "097"), page.map { it.attrs["n"] })
            assertTrue(e.destroy("Customer", made[0].id))
            assertFalse(e.destroy("Customer", made[0].id))
            assertEquals(90uL, e.deleteAll("Customer", FindQuery(conditions = listOf(Condition.IsNull("last")))))
            assertEquals(9uL, e.countAsync("Customer"))
            e.loginAsync(newUser(), "password")
            val pushed = e.pushChanges("Customer")
            assertTrue(pushed.ok && pushed.pushed > 0uL, pushed.toString())
            assertEquals(129uL, pushed.localObjects)
            e.syncAllAsync()
            e.databaseClientReset()
            assertEquals(0uL, e.count("Product", FindQuery()), "synced copies dropped")
            assertEquals(listOf(300uL, 129uL), e.syncAllAsync().map { it.localObjects })
            e.logout(true)
            assertFalse(e.isLoggedIn())
            assertNull(e.userName())
            assertEquals(0uL, e.count("Customer", FindQuery()))
            assertNotEquals(0, e.stats().commandsRun.toInt())
        }
    }
}
