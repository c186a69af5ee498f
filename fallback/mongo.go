package fallback

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// MongoConfig configures the MongoDB store.
type MongoConfig struct {
	URL       string        // MONGO_URL
	DB        string        // MONGO_DB, default "roomproxy"
	Retention time.Duration // MONGO_COMPLETED_RETENTION, default 7 days
	Timeout   time.Duration // per operation, default 5 s
}

// Mongo is the room store on MongoDB: collection "rooms", one document per
// room, written with write concern majority and journaled. Writes to one room
// are serialised inside the process as well (FerretDB, and MongoDB under
// contention, can lose a conditional update among concurrent writers); the
// version condition in the filter keeps several proxy instances safe.
type Mongo struct {
	client *mongo.Client
	rooms  *mongo.Collection
	cfg    MongoConfig
	locks  [256]sync.Mutex // striped by room id; protects the per-room write order
}

type mongoRoom struct {
	ID          string     `bson:"_id"`
	Status      string     `bson:"status"`
	Version     int64      `bson:"version"`
	Keys        []mongoKey `bson:"keys"`
	UpdatedAt   time.Time  `bson:"updatedAt"`
	CompletedAt *time.Time `bson:"completedAt,omitempty"`
	Dirty       bool       `bson:"dirty,omitempty"`
}

// mongoKey keeps key names and values as BSON binary: Redis keys and values
// are bytes, not necessarily UTF-8, and key names may contain '.' or '$'.
type mongoKey struct {
	Name   []byte        `bson:"k"`
	Type   string        `bson:"t"`
	String []byte        `bson:"s,omitempty"`
	Hash   []mongoField  `bson:"h,omitempty"`
	Items  [][]byte      `bson:"i,omitempty"` // set members or list items, in order
	ZSet   []mongoMember `bson:"z,omitempty"`
	Expire *time.Time    `bson:"x,omitempty"` // Value.ExpireAt
}

type mongoField struct {
	Field []byte `bson:"f"`
	Value []byte `bson:"v"`
}

type mongoMember struct {
	Member []byte  `bson:"m"`
	Score  float64 `bson:"s"`
}

// OpenMongo connects, checks the server answers, and creates the indexes:
// status (warm-up, ROOM.LIST) and a TTL index on completedAt for retention.
// A server without TTL indexes (FerretDB v1, code 238) is tolerated: Expire
// does the same work.
func OpenMongo(ctx context.Context, cfg MongoConfig) (*Mongo, error) {
	if cfg.DB == "" {
		cfg.DB = "roomproxy"
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 7 * 24 * time.Hour
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	client, err := mongo.Connect(options.Client().ApplyURI(cfg.URL).SetTimeout(cfg.Timeout))
	if err != nil {
		return nil, errors.New("MONGO_URL: not a valid MongoDB connection string")
	}
	m := &Mongo{client: client, cfg: cfg}
	journaled := true
	wc := &writeconcern.WriteConcern{W: "majority", Journal: &journaled}
	m.rooms = client.Database(cfg.DB).Collection("rooms", options.Collection().SetWriteConcern(wc))
	if err := m.Ping(ctx); err != nil {
		client.Disconnect(context.Background())
		return nil, fmt.Errorf("connect to MongoDB: %w", err)
	}
	// status for List; dirty for ListDirty at every start, which must not
	// scan a week of completed rooms. One call each: FerretDB drops the
	// connection on a CreateMany whose indexes exist already (a restart).
	for _, field := range []string{"status", "dirty"} {
		if _, err := m.rooms.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: field, Value: 1}}}); err != nil {
			client.Disconnect(context.Background())
			return nil, fmt.Errorf("create %s index: %w", field, err)
		}
	}
	// The TTL index in a call of its own: a batch holding an unsupported TTL
	// index creates nothing on FerretDB.
	ttl := mongo.IndexModel{
		Keys:    bson.D{{Key: "completedAt", Value: 1}},
		Options: options.Index().SetExpireAfterSeconds(int32(cfg.Retention / time.Second)),
	}
	if _, err := m.rooms.Indexes().CreateOne(ctx, ttl); err != nil && !isCode(err, 238) {
		client.Disconnect(context.Background())
		return nil, fmt.Errorf("create completedAt TTL index: %w", err)
	}
	return m, nil
}

func isCode(err error, code int) bool {
	var se mongo.ServerError
	return errors.As(err, &se) && se.HasErrorCode(code)
}

func (m *Mongo) lock(id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &m.locks[h.Sum32()%uint32(len(m.locks))]
}

// Put stores room if the stored version is lower; ErrStale otherwise.
func (m *Mongo) Put(ctx context.Context, room Room) error {
	mu := m.lock(room.ID)
	mu.Lock()
	defer mu.Unlock()
	doc := toMongo(room)
	set := bson.D{
		{Key: "status", Value: doc.Status}, {Key: "version", Value: doc.Version},
		{Key: "keys", Value: doc.Keys}, {Key: "updatedAt", Value: doc.UpdatedAt}, {Key: "dirty", Value: doc.Dirty},
	}
	update := bson.D{{Key: "$set", Value: set}}
	if doc.CompletedAt != nil {
		set = append(set, bson.E{Key: "completedAt", Value: *doc.CompletedAt})
		update = bson.D{{Key: "$set", Value: set}}
	} else {
		update = append(update, bson.E{Key: "$unset", Value: bson.D{{Key: "completedAt", Value: ""}}})
	}
	filter := bson.D{{Key: "_id", Value: room.ID}, {Key: "version", Value: bson.D{{Key: "$lt", Value: room.Version}}}}
	_, err := m.rooms.UpdateOne(ctx, filter, update, options.UpdateOne().SetUpsert(true))
	if mongo.IsDuplicateKeyError(err) {
		// The room exists with this version or a later one: the filter did not
		// match and the upsert's insert collided with it.
		return ErrStale
	}
	if err != nil {
		return fmt.Errorf("store room: %w", err)
	}
	return nil
}

// Get reads one room.
func (m *Mongo) Get(ctx context.Context, id string) (Room, bool, error) {
	var doc mongoRoom
	err := m.rooms.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Room{}, false, nil
	}
	if err != nil {
		return Room{}, false, fmt.Errorf("read room: %w", err)
	}
	return fromMongo(doc), true, nil
}

// List returns rooms in the given states, by id.
func (m *Mongo) List(ctx context.Context, statuses []string, limit int) ([]Room, error) {
	opts := options.Find().SetSort(bson.D{{Key: "_id", Value: 1}})
	if limit > 0 {
		opts.SetLimit(int64(limit))
	}
	out, err := m.find(ctx, bson.D{{Key: "status", Value: bson.D{{Key: "$in", Value: statuses}}}}, opts)
	if err != nil {
		return nil, fmt.Errorf("list rooms: %w", err)
	}
	return out, nil
}

// find returns the rooms filter matches.
func (m *Mongo) find(ctx context.Context, filter bson.D, opts *options.FindOptionsBuilder) ([]Room, error) {
	cur, err := m.rooms.Find(ctx, filter, opts)
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	var out []Room
	for cur.Next(ctx) {
		var doc mongoRoom
		if err := cur.Decode(&doc); err != nil {
			return nil, err
		}
		out = append(out, fromMongo(doc))
	}
	return out, cur.Err()
}

// ListDirty returns the rooms marked dirty.
func (m *Mongo) ListDirty(ctx context.Context) ([]Room, error) {
	out, err := m.find(ctx, bson.D{{Key: "dirty", Value: true}}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("list dirty rooms: %w", err)
	}
	return out, nil
}

// Expire deletes rooms completed before the cutoff.
func (m *Mongo) Expire(ctx context.Context, before time.Time) (int, error) {
	res, err := m.rooms.DeleteMany(ctx, bson.D{{Key: "completedAt", Value: bson.D{{Key: "$lt", Value: before}}}})
	if err != nil {
		return 0, fmt.Errorf("expire rooms: %w", err)
	}
	return int(res.DeletedCount), nil
}

// Ping checks the primary answers.
func (m *Mongo) Ping(ctx context.Context) error {
	return m.client.Ping(ctx, readpref.Primary())
}

// Close disconnects.
func (m *Mongo) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
	defer cancel()
	return m.client.Disconnect(ctx)
}

func toMongo(r Room) mongoRoom {
	doc := mongoRoom{ID: r.ID, Status: r.Status, Version: r.Version, UpdatedAt: r.UpdatedAt.UTC().Truncate(time.Millisecond), Dirty: r.Dirty}
	if !r.CompletedAt.IsZero() {
		t := r.CompletedAt.UTC().Truncate(time.Millisecond)
		doc.CompletedAt = &t
	}
	for _, name := range sortedNames(r.Keys) {
		v := r.Keys[name]
		k := mongoKey{Name: []byte(name), Type: v.Type, String: v.String}
		if !v.ExpireAt.IsZero() {
			t := v.ExpireAt.UTC().Truncate(time.Millisecond)
			k.Expire = &t
		}
		for _, f := range sortedNames(v.Hash) {
			k.Hash = append(k.Hash, mongoField{Field: []byte(f), Value: v.Hash[f]})
		}
		if v.Type == TypeSet {
			k.Items = v.Set
		} else {
			k.Items = v.List
		}
		for _, z := range v.ZSet {
			k.ZSet = append(k.ZSet, mongoMember(z))
		}
		doc.Keys = append(doc.Keys, k)
	}
	return doc
}

func fromMongo(doc mongoRoom) Room {
	r := Room{ID: doc.ID, Status: doc.Status, Version: doc.Version, UpdatedAt: doc.UpdatedAt, Keys: map[string]Value{}, Dirty: doc.Dirty}
	if doc.CompletedAt != nil {
		r.CompletedAt = *doc.CompletedAt
	}
	for _, k := range doc.Keys {
		v := Value{Type: k.Type, String: k.String}
		if k.Expire != nil {
			v.ExpireAt = *k.Expire
		}
		switch k.Type {
		case TypeHash:
			v.Hash = make(map[string][]byte, len(k.Hash))
			for _, f := range k.Hash {
				v.Hash[string(f.Field)] = f.Value
			}
		case TypeSet:
			v.Set = k.Items
		case TypeList:
			v.List = k.Items
		case TypeZSet:
			for _, z := range k.ZSet {
				v.ZSet = append(v.ZSet, Member(z))
			}
		}
		r.Keys[string(k.Name)] = v
	}
	return r
}
