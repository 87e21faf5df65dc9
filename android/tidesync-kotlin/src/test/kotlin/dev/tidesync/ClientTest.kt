package dev.tidesync

import dev.tidesync.ktx.emptyQuery
import dev.tidesync.ktx.findAllAsync
import dev.tidesync.ktx.loginAsync
import dev.tidesync.ktx.syncAllAsync
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir
import java.nio.file.Path
import java.util.UUID

/** The bindings against the reference server started by scripts/test-kotlin.sh. */
class ClientTest {
    @TempDir
    lateinit var dir: Path

    private val syncUrl: String = System.getProperty("tidesync.syncUrl")
        ?.takeIf { it.isNotEmpty() }
        ?: error("tidesync.syncUrl is not set: run through scripts/test-kotlin.sh")

    private fun user() = "k-" + UUID.randomUUID().toString().take(8)

    private fun open(): TideSyncClient {
        val c = TideSyncClient.open(ClientConfig(dir.resolve("c.db").toString(), syncUrl, 2000u, true))
        c.defineSource(SourceDefinition("Product", true, 1, Partition.APP, null, emptyList(), emptyList()))
        c.defineSource(SourceDefinition("Customer", true, 2, Partition.USER, null, emptyList(), emptyList()))
        return c
    }

    @Test
    fun loginWithTheRightPasswordSucceedsAndWrongOneThrowsUnauthorized() {
        open().use { c ->
            val e = assertThrows(TideSyncException.Unauthorized::class.java) { c.login("alice", "wrong") }
            assertTrue(e.detail.contains("Unable to authenticate"), e.detail)
            assertFalse(c.isLoggedIn())
            c.login("alice", "password")
            assertTrue(c.isLoggedIn())
            assertEquals("alice", c.userName())
        }
    }

    @Test
    fun aFullSyncHasTheExactCounts() = runBlocking {
        open().use { c ->
            c.loginAsync(user(), "password")
            val results = c.syncAllAsync()
            assertEquals(listOf("Product", "Customer"), results.map { it.name })
            assertTrue(results.all { it.ok }, results.toString())
            assertEquals(300uL, results[0].localObjects)
            assertEquals(120uL, results[1].localObjects)
            assertEquals(120, c.findAllAsync("Customer").size)
            val cheap = c.findAll(
                "Product",
                emptyQuery().copy(
                    conditions = listOf(Condition.Eq("brand", "Apple")),
                    orderBy = listOf("name"),
                    limit = 5uL,
                ),
            )
            assertEquals(5, cheap.size)
            assertTrue(cheap.all { it.attrs["brand"] == "Apple" })
        }
    }

    @Test
    fun aLocalCreateGetsItsServerIdAfterSync() {
        open().use { c ->
            c.login(user(), "password")
            val created = c.create("Customer", mapOf("first" to "Ada", "last" to "Lovelace"))
            assertTrue(created.id.startsWith("tmp-"), created.id)
            c.syncAll("", false)
            assertNull(c.find("Customer", created.id))
            val ada = c.findAll("Customer", emptyQuery().copy(conditions = listOf(Condition.Eq("first", "Ada"))))
            assertEquals(1, ada.size)
            assertFalse(ada[0].id.startsWith("tmp-"))
            assertEquals(121uL, c.count("Customer", emptyQuery()))
        }
    }

    @Test
    fun aRefusedCreateIsReportedAndResolvedWithDelete() {
        open().use { c ->
            c.login(user(), "password")
            val bad = c.create("Product", mapOf("name" to "error", "brand" to "Acme"))
            c.syncSource("Product", "")
            val errors = c.serverErrors("Product")
            assertEquals(1, errors.size, errors.toString())
            assertEquals("create", errors[0].kind)
            assertEquals(bad.id, errors[0].objectId)
            assertEquals("Product name 'error' is not allowed", errors[0].detail)
            c.onSyncCreateError("Product", listOf(bad.id), CreateErrorAction.DELETE)
            assertNull(c.find("Product", bad.id))
            assertTrue(c.serverErrors("Product").isEmpty())
        }
    }

    @Test
    fun errorsAreKotlinExceptionsWithFields() {
        open().use { c ->
            val e = assertThrows(TideSyncException.InvalidArgument::class.java) {
                c.create("NoSuchSource", mapOf("a" to "b"))
            }
            assertTrue(e.reason.contains("unknown source"), e.reason)
            val net = assertThrows(TideSyncException.Unauthorized::class.java) { c.syncAll("", false) }
            assertNotNull(net.detail)
        }
    }

    @Test
    fun aClosedClientThrowsClosed() {
        val c = open()
        c.shutdown()
        assertThrows(TideSyncException.Closed::class.java) { c.isLoggedIn() }
        c.close()
    }

    @Test
    fun aBatchOfLocalWritesIsOneCall() {
        open().use { c ->
            val made = c.createObjects("Customer", (1..100).map { mapOf("first" to "n$it") })
            assertEquals(100, made.size)
            val updated = c.updateObjects("Customer", made.map { ObjectUpdate(it.id, mapOf("last" to "x")) })
            assertTrue(updated.all { it.attrs["last"] == "x" })
            assertEquals(100uL, c.deleteAll("Customer", emptyQuery()))
        }
    }
}
