import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import java.util.zip.ZipInputStream;

/**
 * Extracts the classes of Android archives for the host JVM: for each AAR, its classes.jar and
 * any libs/*.jar are unpacked into the output directory (signature files and module-info
 * skipped). Maven's unpack goals cannot open an AAR, and Maven never puts one on a classpath.
 *
 * <p>Usage (single-file source launch, run by exec-maven-plugin):
 * {@code java ExtractAarClasses.java OUTPUT_DIR AAR[:AAR...]}. Skips the work when OUTPUT_DIR
 * already holds the same list of AARs (a stamp file), so warm builds stay fast.
 */
public final class ExtractAarClasses {
    private static final String STAMP = "META-INF/tidesync-extracted-aars.txt";

    public static void main(String[] args) throws IOException {
        if (args.length != 2) {
            System.err.println("usage: java ExtractAarClasses.java OUTPUT_DIR AAR[:AAR...]");
            System.exit(2);
        }
        Path out = Path.of(args[0]);
        List<Path> aars = new ArrayList<>();
        for (String p : args[1].split(java.io.File.pathSeparator)) {
            if (!p.isBlank()) {
                aars.add(Path.of(p));
            }
        }
        if (aars.isEmpty()) {
            throw new IllegalArgumentException("no AAR given: is the dependency list empty?");
        }
        String stampText = String.join("\n", aars.stream().map(Path::toString).sorted().toList()) + "\n";
        Path stamp = out.resolve(STAMP);
        if (Files.exists(stamp) && Files.readString(stamp, StandardCharsets.UTF_8).equals(stampText)) {
            System.out.println("AAR classes up to date: " + aars.size() + " archives in " + out);
            return;
        }
        int classes = 0;
        for (Path aar : aars) {
            try (ZipFile zip = new ZipFile(aar.toFile())) {
                var entries = zip.entries();
                while (entries.hasMoreElements()) {
                    ZipEntry e = entries.nextElement();
                    String n = e.getName();
                    if (n.equals("classes.jar") || (n.startsWith("libs/") && n.endsWith(".jar"))) {
                        try (InputStream in = zip.getInputStream(e)) {
                            classes += unpackJar(in, out);
                        }
                    }
                }
            }
        }
        Files.createDirectories(stamp.getParent());
        Files.writeString(stamp, stampText, StandardCharsets.UTF_8);
        System.out.println("extracted " + classes + " classes from " + aars.size() + " AARs into " + out);
    }

    private static int unpackJar(InputStream jar, Path out) throws IOException {
        int classes = 0;
        ZipInputStream zin = new ZipInputStream(jar);
        for (ZipEntry e; (e = zin.getNextEntry()) != null; ) {
            String n = e.getName();
            if (e.isDirectory() || skipped(n)) {
                continue;
            }
            Path target = out.resolve(n).normalize();
            if (!target.startsWith(out.normalize())) {
                throw new IOException("entry outside the output directory: " + n);
            }
            Files.createDirectories(target.getParent());
            try (OutputStream os = Files.newOutputStream(target)) {
                zin.transferTo(os);
            }
            if (n.endsWith(".class")) {
                classes++;
            }
        }
        return classes;
    }

    private static boolean skipped(String name) {
        String upper = name.toUpperCase(java.util.Locale.ROOT);
        return name.equals("module-info.class")
                || name.endsWith("/module-info.class")
                || upper.equals("META-INF/MANIFEST.MF")
                || (upper.startsWith("META-INF/")
                        && (upper.endsWith(".SF") || upper.endsWith(".RSA") || upper.endsWith(".DSA")));
    }
}
