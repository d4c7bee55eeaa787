module github.com/glancegw/glancegw

go 1.24.0

require (
	github.com/cpuguy83/go-md2man/v2 v2.0.7 // indirect
	github.com/gophercloud/gophercloud/v2 v2.16.0 // indirect
	github.com/hanwen/go-fuse/v2 v2.12.1 // indirect
	github.com/hashicorp/golang-lru/v2 v2.0.7 // indirect
	github.com/pojntfx/go-nbd v0.3.2 // indirect
	github.com/russross/blackfriday/v2 v2.1.0 // indirect
	github.com/urfave/cli/v2 v2.27.7 // indirect
	github.com/xrash/smetrics v0.0.0-20240521201337-686a1a2994c1 // indirect
)
