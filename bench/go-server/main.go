package main

import (
    "context"
    "fmt"
    "io"
    "log"
    "math/rand"
    "net"
    "sync"
    "time"

    "google.golang.org/grpc"
    "google.golang.org/grpc/codes"
    "google.golang.org/grpc/status"
    "google.golang.org/protobuf/types/known/timestamppb"

    pb "grpc-streaming/proto/chat"
)

type chatServer struct {
    pb.UnimplementedChatServiceServer
    mu          sync.RWMutex
    subscribers map[string][]chan *pb.Message
    messageID   int64
}

func newChatServer() *chatServer {
    return &chatServer{
        subscribers: make(map[string][]chan *pb.Message),
    }
}

// Unary RPC - traditional request/response
func (s *chatServer) SendMessage(ctx context.Context, req *pb.SendMessageRequest) (*pb.SendMessageResponse, error) {
    log.Printf("Unary RPC: SendMessage from %s: %s", req.User, req.Content)

    // Generate message ID
    s.mu.Lock()
    s.messageID++
    msgID := fmt.Sprintf("msg_%d", s.messageID)
    s.mu.Unlock()

    // Create message
    msg := &pb.Message{
        Id:        msgID,
        User:      req.User,
        Content:   req.Content,
        Room:      req.Room,
        Timestamp: timestamppb.Now(),
        Type:      pb.MessageType_CHAT,
    }

    // Broadcast to subscribers
    s.broadcast(req.Room, msg)

    return &pb.SendMessageResponse{
        MessageId: msgID,
        Timestamp: msg.Timestamp,
    }, nil
}

// Server Streaming - client subscribes to room messages
func (s *chatServer) SubscribeMessages(req *pb.SubscribeRequest, stream pb.ChatService_SubscribeMessagesServer) error {
    log.Printf("Server Streaming: %s subscribed to room %s", req.User, req.Room)

    // Create channel for this subscriber
    ch := make(chan *pb.Message, 100)

    // Register subscriber
    s.mu.Lock()
    s.subscribers[req.Room] = append(s.subscribers[req.Room], ch)
    s.mu.Unlock()

    // Cleanup on disconnect
    defer func() {
        s.mu.Lock()
        subs := s.subscribers[req.Room]
        for i, sub := range subs {
            if sub == ch {
                s.subscribers[req.Room] = append(subs[:i], subs[i+1:]...)
                break
            }
        }
        close(ch)
        s.mu.Unlock()
        log.Printf("Server Streaming: %s unsubscribed from room %s", req.User, req.Room)
    }()

    // Send welcome message
    welcome := &pb.Message{
        Id:        "system",
        User:      "System",
        Content:   fmt.Sprintf("Welcome to room %s, %s!", req.Room, req.User),
        Room:      req.Room,
        Timestamp: timestamppb.Now(),
        Type:      pb.MessageType_SYSTEM,
    }

    if err := stream.Send(welcome); err != nil {
        return err
    }

    // Stream messages to client
    for {
        select {
        case <-stream.Context().Done():
            return stream.Context().Err()
        case msg, ok := <-ch:
            if !ok {
                return nil
            }
            if err := stream.Send(msg); err != nil {
                return err
            }
        }
    }
}

// Client Streaming - client sends multiple messages, server responds once
func (s *chatServer) UploadMessages(stream pb.ChatService_UploadMessagesServer) error {
    log.Printf("Client Streaming: UploadMessages started")

    count := 0
    startTime := time.Now()

    for {
        msg, err := stream.Recv()
        if err == io.EOF {
            // Client finished sending
            duration := time.Since(startTime)
            log.Printf("Client Streaming: Received %d messages in %v", count, duration)

            return stream.SendAndClose(&pb.UploadResponse{
                MessageCount: int32(count),
                Success:      true,
            })
        }
        if err != nil {
            return status.Errorf(codes.Internal, "receive error: %v", err)
        }

        log.Printf("Received upload: %s from %s", msg.Content, msg.User)
        count++

        // Broadcast message to room
        s.broadcast(msg.Room, msg)
    }
}

// Bidirectional Streaming - full chat
func (s *chatServer) Chat(stream pb.ChatService_ChatServer) error {
    log.Printf("Bidirectional Streaming: Chat session started")

    // Channel to receive client messages
    errChan := make(chan error, 1)

    // Goroutine to read from client
    go func() {
        for {
            msg, err := stream.Recv()
            if err == io.EOF {
                log.Printf("Bidirectional Streaming: Client closed stream")
                errChan <- nil
                return
            }
            if err != nil {
                log.Printf("Bidirectional Streaming: Receive error: %v", err)
                errChan <- err
                return
            }

            log.Printf("Bidirectional: Received from %s: %s", msg.User, msg.Content)

            // Echo back with server timestamp
            response := &pb.Message{
                Id:        fmt.Sprintf("echo_%s", msg.Id),
                User:      "Server",
                Content:   fmt.Sprintf("Echo: %s", msg.Content),
                Room:      msg.Room,
                Timestamp: timestamppb.Now(),
                Type:      pb.MessageType_SYSTEM,
            }

            if err := stream.Send(response); err != nil {
                log.Printf("Bidirectional Streaming: Send error: %v", err)
                errChan <- err
                return
            }

            // Also broadcast to subscribers
            s.broadcast(msg.Room, msg)
        }
    }()

    // Send periodic server messages
    ticker := time.NewTicker(5 * time.Second)
    defer ticker.Stop()

    for {
        select {
        case <-stream.Context().Done():
            log.Printf("Bidirectional Streaming: Context cancelled")
            return stream.Context().Err()

        case err := <-errChan:
            return err

        case <-ticker.C:
            serverMsg := &pb.Message{
                Id:        fmt.Sprintf("server_%d", time.Now().Unix()),
                User:      "Server",
                Content:   "Server is alive!",
                Timestamp: timestamppb.Now(),
                Type:      pb.MessageType_SYSTEM,
            }

            if err := stream.Send(serverMsg); err != nil {
                log.Printf("Bidirectional Streaming: Ticker send error: %v", err)
                return err
            }
        }
    }
}

// Server Streaming - metrics/telemetry
func (s *chatServer) StreamMetrics(req *pb.MetricsRequest, stream pb.ChatService_StreamMetricsServer) error {
    log.Printf("Server Streaming: StreamMetrics for instance %s", req.InstanceId)

    interval := time.Duration(req.IntervalSeconds) * time.Second
    if interval == 0 {
        interval = 1 * time.Second
    }

    ticker := time.NewTicker(interval)
    defer ticker.Stop()

    for {
        select {
        case <-stream.Context().Done():
            log.Printf("Server Streaming: Metrics stream closed for %s", req.InstanceId)
            return stream.Context().Err()

        case <-ticker.C:
            // Generate sample metrics
            metrics := []*pb.Metric{
                {
                    Name:      "cpu_usage",
                    Value:     rand.Float64() * 100,
                    Timestamp: timestamppb.Now(),
                    Labels: map[string]string{
                        "instance": req.InstanceId,
                        "core":     "0",
                    },
                },
                {
                    Name:      "memory_usage",
                    Value:     rand.Float64() * 8192,
                    Timestamp: timestamppb.Now(),
                    Labels: map[string]string{
                        "instance": req.InstanceId,
                        "type":     "resident",
                    },
                },
                {
                    Name:      "requests_per_second",
                    Value:     rand.Float64() * 1000,
                    Timestamp: timestamppb.Now(),
                    Labels: map[string]string{
                        "instance": req.InstanceId,
                        "endpoint": "/api",
                    },
                },
            }

            // Send all metrics
            for _, metric := range metrics {
                if err := stream.Send(metric); err != nil {
                    return err
                }
            }
        }
    }
}

// Helper: broadcast message to room subscribers
func (s *chatServer) broadcast(room string, msg *pb.Message) {
    s.mu.RLock()
    subs := s.subscribers[room]
    s.mu.RUnlock()

    for _, ch := range subs {
        select {
        case ch <- msg:
        default:
            log.Printf("Subscriber channel full, dropping message")
        }
    }
}

func main() {
    lis, err := net.Listen("tcp", ":50051")
    if err != nil {
        log.Fatalf("Failed to listen: %v", err)
    }

    // Create gRPC server
    grpcServer := grpc.NewServer(
        grpc.MaxConcurrentStreams(1000),
        grpc.MaxRecvMsgSize(10 * 1024 * 1024), // 10MB
        grpc.MaxSendMsgSize(10 * 1024 * 1024), // 10MB
    )

    // Register service
    pb.RegisterChatServiceServer(grpcServer, newChatServer())

    log.Printf("gRPC server listening on :50051")
    log.Printf("Streaming modes available:")
    log.Printf("  - Unary: SendMessage")
    log.Printf("  - Server Streaming: SubscribeMessages, StreamMetrics")
    log.Printf("  - Client Streaming: UploadMessages")
    log.Printf("  - Bidirectional: Chat")

    if err := grpcServer.Serve(lis); err != nil {
        log.Fatalf("Failed to serve: %v", err)
    }
}
