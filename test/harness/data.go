package harness

import "math/rand/v2"

// RandomBytes returns n pseudo-random bytes determined by seed, so a failing
// comparison can be reproduced.
func RandomBytes(seed uint64, n int) []byte {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	r := rand.NewChaCha8(key)
	_, _ = r.Read(b) // ChaCha8.Read never fails
	return b
}
