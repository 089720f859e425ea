package main

import (
    "context"
    "fmt"
    "io"
    "log"
    "time"

    "google.golang.org/grpc"
    "google.golang.org/protobuf/types/known/timestamppb"

    pb "grpc-streaming/proto/chat"
)

func main() {
    // Connect to server
    conn, err := grpc.Dial("localhost:50051",
        grpc.WithInsecure(),
        grpc.WithBlock(),
    )
    if err != nil {
        log.Fatalf("Failed to connect: %v", err)
    }
    defer conn.Close()

    client := pb.NewChatServiceClient(conn)

    // Example 1: Unary RPC
    fmt.Println("\n=== Unary RPC Example ===")
    unaryExample(client)

    // Example 2: Server Streaming
    fmt.Println("\n=== Server Streaming Example ===")
    go serverStreamingExample(client)

    // Example 3: Client Streaming
    fmt.Println("\n=== Client Streaming Example ===")
    clientStreamingExample(client)

    // Example 4: Bidirectional Streaming
    fmt.Println("\n=== Bidirectional Streaming Example ===")
    go bidirectionalExample(client)

    // Example 5: Metrics Streaming
    fmt.Println("\n=== Metrics Streaming Example ===")
    go metricsExample(client)

    // Keep running
    select {}
}

func unaryExample(client pb.ChatServiceClient) {
    ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
    defer cancel()

    resp, err := client.SendMessage(ctx, &pb.SendMessageRequest{
        User:    "Alice",
        Content: "Hello from unary RPC!",
        Room:    "general",
    })

    if err != nil {
        log.Printf("Unary error: %v", err)
        return
    }

    log.Printf("Unary response: ID=%s, Time=%v", resp.MessageId, resp.Timestamp.AsTime())
}

func serverStreamingExample(client pb.ChatServiceClient) {
    ctx := context.Background()

    stream, err := client.SubscribeMessages(ctx, &pb.SubscribeRequest{
        Room: "general",
        User: "Alice",
    })

    if err != nil {
        log.Printf("Server streaming error: %v", err)
        return
    }

    log.Printf("Subscribed to room 'general'")

    for {
        msg, err := stream.Recv()
        if err == io.EOF {
            log.Printf("Server closed stream")
            break
        }
        if err != nil {
            log.Printf("Receive error: %v", err)
            break
        }

        log.Printf("[%s] %s: %s", msg.Room, msg.User, msg.Content)
    }
}

func clientStreamingExample(client pb.ChatServiceClient) {
    ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
    defer cancel()

    stream, err := client.UploadMessages(ctx)
    if err != nil {
        log.Printf("Client streaming error: %v", err)
        return
    }

    // Send multiple messages
    messages := []string{
        "First batch message",
        "Second batch message",
        "Third batch message",
        "Fourth batch message",
        "Fifth batch message",
    }

    for i, content := range messages {
        msg := &pb.Message{
            Id:        fmt.Sprintf("batch_%d", i),
            User:      "Bob",
            Content:   content,
            Room:      "general",
            Timestamp: timestamppb.Now(),
            Type:      pb.MessageType_CHAT,
        }

        if err := stream.Send(msg); err != nil {
            log.Printf("Send error: %v", err)
            return
        }

        log.Printf("Sent batch message %d", i+1)
        time.Sleep(200 * time.Millisecond)
    }

    // Close and receive response
    resp, err := stream.CloseAndRecv()
    if err != nil {
        log.Printf("Close error: %v", err)
        return
    }

    log.Printf("Upload complete: %d messages processed, success=%v", resp.MessageCount, resp.Success)
}

func bidirectionalExample(client pb.ChatServiceClient) {
    ctx := context.Background()

    stream, err := client.Chat(ctx)
    if err != nil {
        log.Printf("Bidirectional error: %v", err)
        return
    }

    // Goroutine to receive messages
    go func() {
        for {
            msg, err := stream.Recv()
            if err == io.EOF {
                log.Printf("Server closed bidirectional stream")
                return
            }
            if err != nil {
                log.Printf("Bidirectional receive error: %v", err)
                return
            }

            log.Printf("[Bidirectional] %s: %s", msg.User, msg.Content)
        }
    }()

    // Send messages periodically
    ticker := time.NewTicker(3 * time.Second)
    defer ticker.Stop()

    counter := 0
    for range ticker.C {
        counter++
        msg := &pb.Message{
            Id:        fmt.Sprintf("client_%d", counter),
            User:      "Charlie",
            Content:   fmt.Sprintf("Bidirectional message #%d", counter),
            Room:      "general",
            Timestamp: timestamppb.Now(),
            Type:      pb.MessageType_CHAT,
        }

        if err := stream.Send(msg); err != nil {
            log.Printf("Bidirectional send error: %v", err)
            return
        }

        log.Printf("Sent bidirectional message #%d", counter)

        if counter >= 10 {
            stream.CloseSend()
            return
        }
    }
}

func metricsExample(client pb.ChatServiceClient) {
    ctx := context.Background()

    stream, err := client.StreamMetrics(ctx, &pb.MetricsRequest{
        InstanceId:      "server-01",
        IntervalSeconds: 2,
    })

    if err != nil {
        log.Printf("Metrics streaming error: %v", err)
        return
    }

    log.Printf("Receiving metrics stream...")

    count := 0
    for {
        metric, err := stream.Recv()
        if err == io.EOF {
            log.Printf("Metrics stream closed")
            break
        }
        if err != nil {
            log.Printf("Metrics receive error: %v", err)
            break
        }

        log.Printf("Metric: %s = %.2f (labels: %v)", metric.Name, metric.Value, metric.Labels)
        count++

        if count >= 10 {
            break
        }
    }
}
