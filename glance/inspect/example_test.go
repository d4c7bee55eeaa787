package inspect_test

import (
	"fmt"
	"os"

	"github.com/glancegw/glancegw/glance/inspect"
)

func ExampleDetect() {
	f, err := os.Open("../../testdata/inspect/extra-qemu-img/qcow2-backing.qcow2")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := inspect.Detect(f, st.Size())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Format, res.VirtualSize)
	fmt.Println(res.Safe())
	// Output:
	// qcow2 1048576
	// inspect: qcow2 has a backing file "base.raw" (it would expose a host file): refused
}
