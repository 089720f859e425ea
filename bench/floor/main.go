// The floor of fan-out on this machine: the CPU one thread spends per small write() to N loopback
// TCP sockets whose other ends other threads drain. A chat server cannot deliver a message to a
// socket for less than one such write; bench/compare.sh prints every figure as a ratio to it.
//
// Usage: floor -sockets 1000 -rounds 1000 -size 80   (prints one JSON line)
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"
)

// rusageThread is RUSAGE_THREAD: the calling thread's usage only.
const rusageThread = 1

func threadCPU() time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &usage); err != nil {
		log.Fatal(err)
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

func main() {
	sockets := flag.Int("sockets", 1000, "loopback TCP connections")
	rounds := flag.Int("rounds", 1000, "writes to each socket")
	size := flag.Int("size", 80, "bytes per write")
	flag.Parse()

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	accepted := make(chan net.Conn)
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				log.Fatal(err)
			}
			accepted <- conn
		}
	}()
	// The files own the descriptors: kept so that no finalizer closes them.
	files := make([]*os.File, 0, *sockets)
	fds := make([]int, 0, *sockets)
	drained := make(chan struct{}, *sockets)
	for i := 0; i < *sockets; i++ {
		conn, err := net.Dial("tcp", listener.Addr().String())
		if err != nil {
			log.Fatal(err)
		}
		conn.(*net.TCPConn).SetNoDelay(true)
		reader := <-accepted
		go func() {
			io.Copy(io.Discard, reader)
			drained <- struct{}{}
		}()
		// A blocking descriptor of its own: plain write() calls, no runtime poller between.
		file, err := conn.(*net.TCPConn).File()
		if err != nil {
			log.Fatal(err)
		}
		conn.Close()
		files = append(files, file)
		fds = append(fds, int(file.Fd()))
	}

	message := make([]byte, *size)
	for i := range message {
		message[i] = 'x'
	}
	runtime.LockOSThread()
	started, cpu := time.Now(), threadCPU()
	for round := 0; round < *rounds; round++ {
		for _, fd := range fds {
			if _, err := syscall.Write(fd, message); err != nil {
				log.Fatal(err)
			}
		}
	}
	cpu, elapsed := threadCPU()-cpu, time.Since(started)
	for _, file := range files {
		file.Close()
	}
	for range fds {
		<-drained
	}
	writes := float64(*sockets * *rounds)
	// The shape of `grpc-chat bench --json`: parameters and figures as [name, value] pairs.
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"server":   "floor",
		"scenario": "floor",
		"parameters": [][]interface{}{
			{"sockets", *sockets}, {"rounds", *rounds}, {"size_bytes", *size},
		},
		"figures": [][]interface{}{
			{"writes", writes},
			{"writes_per_s", writes / elapsed.Seconds()},
			{"cpu_us_per_write", float64(cpu.Nanoseconds()) / 1e3 / writes},
			{"writer_cpu_s", cpu.Seconds()},
		},
	})
}
