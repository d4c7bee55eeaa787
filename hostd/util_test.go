package hostd

import (
	"encoding/json"
	"time"
)

func sleep(ms int) { time.Sleep(time.Duration(ms) * time.Millisecond) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
