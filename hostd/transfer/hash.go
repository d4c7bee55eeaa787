package transfer

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"hash"
	"strings"
)

// Checksum is an expected or computed digest: Algo is a Glance
// os_hash_algo name (hashlib's: sha512, sha256, md5, ...), Value lower-case
// hex.
type Checksum struct {
	Algo  string `json:"algo,omitempty"`
	Value string `json:"value,omitempty"`
}

// IsZero reports an absent checksum.
func (c Checksum) IsZero() bool { return c.Algo == "" || c.Value == "" }

func (c Checksum) String() string {
	if c.IsZero() {
		return "none"
	}
	return c.Algo + ":" + c.Value
}

// newHash returns the hash for a hashlib algorithm name, nil if unknown.
func newHash(algo string) hash.Hash {
	switch strings.ToLower(algo) {
	case "md5":
		return md5.New()
	case "sha1":
		return sha1.New()
	case "sha224":
		return sha256.New224()
	case "sha256":
		return sha256.New()
	case "sha384":
		return sha512.New384()
	case "sha512":
		return sha512.New()
	case "sha3_224":
		return sha3.New224()
	case "sha3_256":
		return sha3.New256()
	case "sha3_384":
		return sha3.New384()
	case "sha3_512":
		return sha3.New512()
	}
	return nil
}

// Expected picks what an import verifies against from a Glance record:
// os_hash_algo/os_hash_value when the algorithm is known, else the md5
// checksum, else nothing.
func Expected(osHashAlgo, osHashValue, md5sum string) Checksum {
	if osHashValue != "" && newHash(osHashAlgo) != nil {
		return Checksum{Algo: strings.ToLower(osHashAlgo), Value: strings.ToLower(osHashValue)}
	}
	if md5sum != "" {
		return Checksum{Algo: "md5", Value: strings.ToLower(md5sum)}
	}
	return Checksum{}
}
