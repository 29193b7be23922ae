// A target for `vmshim explain` on the JVM (issue 16): N Java threads (default 8), each
// allocating on the Java heap and printing `thread TID` (its kernel tid, from
// /proc/thread-self), then parking on a latch. The main thread prints `ready PID` and waits
// for stdin to close, then releases the threads, joins them and prints `done N`. With `stay` it
// halts with its threads still parked, so that the map at exit holds every stack.
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;

public class explain_jvm {
    static volatile Object keep;

    static long tid() throws Exception {
        // "/proc/thread-self" -> "PID/task/TID"
        String s = Files.readSymbolicLink(Path.of("/proc/thread-self")).toString();
        return Long.parseLong(s.substring(s.lastIndexOf('/') + 1));
    }

    public static void main(String[] args) throws Exception {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 8;
        CountDownLatch started = new CountDownLatch(n);
        CountDownLatch release = new CountDownLatch(1);
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            Thread t = new Thread(() -> {
                try {
                    keep = new byte[1 << 20];
                    long tid = tid();
                    synchronized (System.out) {
                        System.out.println("thread " + tid);
                        System.out.flush();
                    }
                    started.countDown();
                    release.await();
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            }, "worker-" + i);
            t.start();
            threads.add(t);
        }
        started.await();
        System.out.println("ready " + ProcessHandle.current().pid());
        System.out.flush();
        InputStream in = System.in;
        while (in.read() >= 0) {
        }
        if (args.length > 1 && args[1].equals("stay")) {
            System.out.println("done " + n);
            System.out.flush();
            Runtime.getRuntime().halt(0);
        }
        release.countDown();
        for (Thread t : threads) t.join();
        System.out.println("done " + n);
    }
}
