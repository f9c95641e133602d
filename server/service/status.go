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
		Consistent: req.GetConsistent(),
	}
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
		Lock: &dlmv1.LockStatus{
			Holder: st.Lock.Holder, HolderName: st.Lock.HolderName, Token: st.Lock.Token, LastToken: st.Lock.LastToken,
			StagedAppends: uint32(st.Lock.StagedAppends), StagedBytes: st.Lock.StagedBytes,
			Queue: st.Lock.Queue, QueueLength: st.Lock.QueueLength, LeaseLeftMs: st.Lock.LeaseLeft.Milliseconds(),
		},
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
