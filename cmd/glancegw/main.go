// Command glancegw is the glancegw host daemon (glancegw serve) and the
// command-line client of its local API.
package main

import "os"

func main() {
	os.Exit(run(os.Args, defaultEnv()))
}
