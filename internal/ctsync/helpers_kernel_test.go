package ctsync

import (
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// setLinkUp sets dev in namespace ns up or down.
func setLinkUp(ns, dev string, up bool) error {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return err
	}
	defer nh.Close()
	l, err := nh.LinkByName(dev)
	if err != nil {
		return err
	}
	if up {
		return nh.LinkSetUp(l)
	}
	return nh.LinkSetDown(l)
}
