package filter

import (
	"fmt"
	"slices"
	"sync"
)

// Plugin is a filter plugin: a pointer to a struct whose fields are its
// configuration keys (yaml tags), implementing Judge or Modifier, and
// optionally Provisioner and io.Closer.
type Plugin any

// PluginInfo registers a plugin type.
type PluginInfo struct {
	Type string // the value of the "type" key
	// New returns a pointer to a new, unconfigured plugin, into which its
	// YAML block is decoded. It must have no side effects.
	New func() Plugin
	// MaxConcurrent is the default of the filter's max_concurrent key: how
	// many messages it checks at once over all sessions, the rest waiting
	// (within the timeout). Set it to what the daemon serves at once; 0: no limit.
	MaxConcurrent int
	// Inline says the plugin does no I/O and returns promptly (the header
	// plugin): the chain calls it directly, without goroutine and timer, and
	// its timeout and max_concurrent keys do nothing.
	Inline bool
}

var (
	registryMu sync.RWMutex
	registry   = map[string]PluginInfo{}
)

// Register makes a plugin type available; call it from an init function.
// It panics on an empty Type, a nil New or a type registered twice.
func Register(info PluginInfo) {
	if info.Type == "" || info.New == nil {
		panic("filter: Register needs a Type and a New function")
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[info.Type]; dup {
		panic(fmt.Sprintf("filter: plugin type %q registered twice", info.Type))
	}
	registry[info.Type] = info
}

// Types lists the registered plugin types, sorted.
func Types() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	types := make([]string, 0, len(registry))
	for t := range registry {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

func lookup(typ string) (PluginInfo, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	info, ok := registry[typ]
	return info, ok
}
