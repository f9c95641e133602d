package service

import (
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/node"
)

// statusQuery is the node's query for an API request.
func statusQuery(req *dlmv1.StatusRequest) node.StatusQuery {
	return node.StatusQuery{
		PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken(),
		KnownStateIndex: req.GetKnownStateIndex(), Wait: time.Duration(req.GetWaitMs()) * time.Millisecond,
		Consistent: req.GetConsistent(), Lock: req.Lock,
	}
}

// lockStatus is the API's view of one lock.
func lockStatus(l node.LockInfo) *dlmv1.LockStatus {
	ls := &dlmv1.LockStatus{
		Holder: l.Holder, HolderName: l.HolderName, Token: l.Token, LastToken: l.LastToken,
		StagedAppends: uint32(l.StagedAppends), StagedBytes: l.StagedBytes,
		Queue: l.Queue, QueueLength: l.QueueLength, LeaseLeftMs: l.LeaseLeft.Milliseconds(),
		Name: l.Name, QueueModes: make([]dlmv1.LockMode, len(l.QueueModes)),
		Delayed: l.Delayed, DelayMs: l.DelayMs,
	}
	if l.Holder != 0 || len(l.Holders) > 0 {
		ls.Mode = modeOf(l.Mode)
	}
	for i, m := range l.QueueModes {
		ls.QueueModes[i] = modeOf(m)
	}
	for _, h := range l.HolderStatus {
		ls.Holders = append(ls.Holders, &dlmv1.LockHolder{
			ClientId: h.ClientID, Token: h.Token, Name: h.Name, Mode: modeOf(h.Mode),
			GrantedUnixMs: h.GrantedUnixMs, LeaseLeftMs: h.LeaseLeft.Milliseconds(),
		})
	}
	return ls
}

// statusResponse is the API's answer for a node's status.
func statusResponse(st node.Status) *dlmv1.StatusResponse {
	ni := st.Node
	lastContact := ni.LastContact.Milliseconds()
	if ni.LastContact < 0 {
		lastContact = -1
	}
	res := &dlmv1.StatusResponse{
		Node: &dlmv1.NodeStatus{
			Id: ni.ID, Role: ni.Role, Term: ni.Term, LeaderUrl: ni.LeaderURL, RaftAddress: ni.RaftAddr,
			CommitIndex: ni.CommitIndex, AppliedIndex: ni.AppliedIndex, LastContactMs: lastContact,
			FreeBytes: ni.FreeBytes, StorageFault: ni.StorageFault,
		},
		Lock:       lockStatus(st.Lock),
		LockCount:  st.LockCount,
		StateIndex: st.StateIndex, SessionCount: st.SessionCount, NextPageToken: st.NextPageToken,
	}
	for _, s := range st.Sessions {
		res.Sessions = append(res.Sessions, &dlmv1.SessionStatus{ClientId: s.ClientID, Name: s.Name, LeaseMs: s.LeaseMs, LeaseLeftMs: s.LeaseLeft.Milliseconds()})
	}
	for _, f := range st.Files {
		res.Files = append(res.Files, &dlmv1.FileStatus{Name: f.Name, Size: f.Size})
	}
	for _, m := range st.Members {
		res.Members = append(res.Members, memberStatus(m))
	}
	return res
}

// memberStatus is a member as the API shows it.
func memberStatus(m node.Member) *dlmv1.MemberStatus {
	suffrage := "nonvoter"
	if m.Voter {
		suffrage = "voter"
	}
	return &dlmv1.MemberStatus{Id: m.ID, RaftAddress: m.RaftAddr, Suffrage: suffrage, Leader: m.Leader, ClientUrl: m.ClientURL}
}
