// The WebSocket chat server of the second source document (seeds/001: gorilla/websocket, a
// goroutine per room fed by unbuffered channels, a read and a write goroutine per client), as the
// article publishes it. The article leaves out the types, the room constructor and the upgrader;
// they are written here the plain way its code implies. The only change: bench/compare.sh
// replaces the address ":8080" with the benchmark's loopback port.
package main

import (
	"log"
	"net/http"
	"sync"

	"github.com/gorilla/websocket"
)

// Message is the seed's frame: {"Author": "...", "Content": "..."}.
type Message struct {
	Author  string `json:"Author"`
	Content string `json:"Content"`
}

// Client is one socket in a room.
type Client struct {
	ID       string
	NickName string
	Send     chan Message
}

// Room is served by its own goroutine (Run).
type Room struct {
	Code    string
	Clients map[*Client]bool
	Join    chan *Client
	Leave   chan *Client
	Msg     chan Message
	mu      sync.Mutex
}

var (
	rooms    = map[string]*Room{}
	mu       sync.Mutex
	upgrader = websocket.Upgrader{CheckOrigin: func(r *http.Request) bool { return true }}
)

func main() {
	http.HandleFunc("/ws", HandleConnection)

	log.Println("Server started on :8080")
	err := http.ListenAndServe(":8080", nil)
	if err != nil {
		log.Fatal("ListenAndServe: ", err)
	}
}

// HandleConnection is the article's chat.HandleConnection.
func HandleConnection(w http.ResponseWriter, r *http.Request) {
	roomCode := r.URL.Query().Get("roomCode")

	rInstance, _ := GetRoom(roomCode)

	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		http.Error(w, "Failed to upgrade connection", http.StatusInternalServerError)
		return
	}

	client := &Client{
		ID:       conn.RemoteAddr().String(),
		NickName: "User_" + conn.RemoteAddr().String(),
		Send:     make(chan Message),
	}

	rInstance.Join <- client

	go readPump(client, conn, rInstance)
	go writePump(client, conn)
}

func readPump(client *Client, conn *websocket.Conn, r *Room) {
	defer func() {
		r.Leave <- client
		conn.Close()
	}()

	for {
		var msg Message
		err := conn.ReadJSON(&msg)
		if err != nil {
			break
		}
		r.Msg <- msg
	}
}

func writePump(client *Client, conn *websocket.Conn) {
	defer conn.Close()

	for message := range client.Send {
		err := conn.WriteJSON(message)
		if err != nil {
			break
		}
	}
}

// GetRoom is the article's room.GetRoom.
func GetRoom(code string) (*Room, bool) {
	mu.Lock()
	r, exists := rooms[code]
	mu.Unlock()

	if exists {
		return r, true
	}

	return createRoom(code)
}

func createRoom(code string) (*Room, bool) {
	mu.Lock()
	defer mu.Unlock()

	if r, exists := rooms[code]; exists {
		return r, true
	}

	newRoom := NewRoom(code)
	go newRoom.Run()
	rooms[code] = newRoom
	return newRoom, false
}

// NewRoom makes a room with unbuffered channels, as the article's Run expects.
func NewRoom(code string) *Room {
	return &Room{
		Code:    code,
		Clients: map[*Client]bool{},
		Join:    make(chan *Client),
		Leave:   make(chan *Client),
		Msg:     make(chan Message),
	}
}

// Run is the article's room.Run.
func (r *Room) Run() {
	for {
		select {
		case client := <-r.Join:
			log.Println(client.NickName, "someone joined!")
			r.mu.Lock()
			r.Clients[client] = true
			r.mu.Unlock()

		case client := <-r.Leave:
			log.Println("someone leaved!")
			r.mu.Lock()
			delete(r.Clients, client)
			close(client.Send)
			r.mu.Unlock()
		case msg := <-r.Msg:
			log.Println("someone sent message!")
			for client := range r.Clients {
				client.Send <- msg
			}
		}
	}
}
